//! Delivery status notifications (RFC 3464): the `multipart/report` a sender
//! gets for recipients that failed for good, sent from the null sender.

use magicmx_proto::Address;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

use crate::queue::QueueId;

/// How much of the original a DSN is built from: its header section is
/// returned, and a header section longer than this is cut.
pub const RETURNED_HEAD: usize = 64 * 1024;

/// One recipient that failed, and why.
pub struct Failed<'a> {
    pub recipient: &'a Address,
    pub reason: &'a str,
}

/// The whole DSN message, headers and body, CRLF line ends.
pub fn build(
    reporting_mta: &str,
    original_id: QueueId,
    arrived: OffsetDateTime,
    sender: &Address,
    failed: &[Failed<'_>],
    original: &[u8],
    now: OffsetDateTime,
) -> Vec<u8> {
    let date = |t: OffsetDateTime| t.format(&Rfc2822).unwrap_or_default();
    let boundary = format!("{original_id}/{reporting_mta}");
    let mut out = String::new();
    out.push_str(&format!("From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>\r\n"));
    out.push_str(&format!("To: <{sender}>\r\n"));
    out.push_str("Subject: Undelivered Mail Returned to Sender\r\n");
    out.push_str(&format!("Date: {}\r\n", date(now)));
    out.push_str(&format!("Message-ID: <{original_id}.dsn@{reporting_mta}>\r\n"));
    out.push_str("Auto-Submitted: auto-replied\r\n");
    out.push_str("MIME-Version: 1.0\r\n");
    out.push_str(&format!(
        "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"{boundary}\"\r\n\r\n"
    ));
    out.push_str("This is a MIME-encapsulated message.\r\n\r\n");
    out.push_str(&format!("--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"));
    out.push_str(&format!(
        "This is the mail system at {reporting_mta}.\r\n\r\nYour message could not be delivered to one or more recipients.\r\nIt is attached below.\r\n\r\n"
    ));
    for f in failed {
        out.push_str(&format!("<{}>: {}\r\n", f.recipient, one_line(f.reason)));
    }
    out.push_str(&format!("\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"));
    out.push_str(&format!("Reporting-MTA: dns; {reporting_mta}\r\n"));
    out.push_str(&format!("X-Magicmx-Queue-ID: {original_id}\r\n"));
    out.push_str(&format!("Arrival-Date: {}\r\n", date(arrived)));
    for f in failed {
        out.push_str(&format!("\r\nFinal-Recipient: rfc822; {}\r\n", f.recipient));
        out.push_str("Action: failed\r\n");
        out.push_str(&format!("Status: {}\r\n", status_of(f.reason)));
        if let Some((mta, reply)) = f.reason.split_once(" said: ") {
            let host = mta.split('[').next().unwrap_or(mta);
            out.push_str(&format!("Remote-MTA: dns; {host}\r\n"));
            out.push_str(&format!("Diagnostic-Code: smtp; {}\r\n", one_line(reply)));
        } else {
            out.push_str(&format!("Diagnostic-Code: X-magicmx; {}\r\n", one_line(f.reason)));
        }
    }
    out.push_str(&format!("\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"));
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(header_section(original));
    bytes.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    bytes
}

/// The enhanced status code in a failure reason, or a generic one.
fn status_of(reason: &str) -> String {
    reason
        .split(|c: char| c.is_whitespace() || c == ':')
        .find(|word| {
            let parts: Vec<&str> = word.split('.').collect();
            parts.len() == 3
                && matches!(parts[0], "4" | "5")
                && parts[1..]
                    .iter()
                    .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
        .unwrap_or_else(|| "5.0.0".into())
}

/// The original's header section, up to and including its last header line.
fn header_section(message: &[u8]) -> &[u8] {
    match message.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(end) => &message[..end + 2],
        // Cut short (see `RETURNED_HEAD`): up to the last whole line.
        None => match message.windows(2).rposition(|w| w == b"\r\n") {
            Some(end) => &message[..end + 2],
            None => &[],
        },
    }
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_failed_recipient_with_its_status() {
        let sender = Address::parse("alice@client.test").unwrap();
        let bob = Address::parse("bob@example.test").unwrap();
        let carol = Address::parse("carol@example.test").unwrap();
        let failed = [
            Failed { recipient: &bob, reason: "mail.example.test[192.0.2.1] said: 550 5.1.1 no such user" },
            Failed { recipient: &carol, reason: "gave up after 5 days: connection refused" },
        ];
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let dsn = build("mx.mesh.test", QueueId(1), t, &sender, &failed, b"Subject: hi\r\n\r\nbody\r\n", t);
        let text = String::from_utf8(dsn).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("Final-Recipient: rfc822; bob@example.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mail.example.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user"));
        assert!(
            text.contains("Final-Recipient: rfc822; carol@example.test\r\nAction: failed\r\nStatus: 5.0.0")
        );
        assert!(text.contains("text/rfc822-headers\r\n\r\nSubject: hi\r\n\r\n--"));
        assert!(!text.contains("body\r\n"), "only the headers of the original are returned");
        assert!(text.ends_with("--\r\n"));
    }
}
