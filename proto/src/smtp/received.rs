//! The `Received:` trace header a relay prepends to each message (RFC 5321 §4.4).

use std::net::IpAddr;

use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// What the trace header records about the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedInfo {
    pub helo: String,
    pub client_ip: IpAddr,
    /// The client's verified reverse name, when the node has one.
    pub client_name: Option<String>,
    pub server: String,
    /// `ESMTP`, `ESMTPS` (TLS), `UTF8SMTP`, `UTF8SMTPS` or `SMTP` (RFC 3848, RFC 6531).
    pub protocol: &'static str,
    pub queue_id: String,
    /// The recipient, written only when there is exactly one (RFC 5321 §4.4 `for`).
    pub single_recipient: Option<String>,
}

/// The header, folded over lines, ending in CRLF. The date is passed in.
pub fn received_header(info: &ReceivedInfo, date: OffsetDateTime) -> String {
    let date = date.format(&Rfc2822).unwrap_or_else(|_| "Thu, 01 Jan 1970 00:00:00 +0000".into());
    let ip = match info.client_ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("IPv6:{v6}"),
    };
    let name = info.client_name.as_deref().unwrap_or("unknown");
    let helo: String = info.helo.chars().filter(|c| !c.is_control()).take(255).collect();
    let mut header = format!(
        "Received: from {helo} ({name} [{ip}])\r\n\tby {} (magicmx) with {} id {}",
        info.server, info.protocol, info.queue_id
    );
    if let Some(rcpt) = &info.single_recipient {
        header.push_str(&format!("\r\n\tfor <{rcpt}>"));
    }
    header.push_str(&format!(";\r\n\t{date}\r\n"));
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn received_header_names_client_server_and_date() {
        let info = ReceivedInfo {
            helo: "client.test".into(),
            client_ip: "192.0.2.1".parse().unwrap(),
            client_name: None,
            server: "mx.mesh.test".into(),
            protocol: "ESMTP",
            queue_id: "00000001".into(),
            single_recipient: Some("a@example.test".into()),
        };
        let date = OffsetDateTime::from_unix_timestamp(0).unwrap();
        let h = received_header(&info, date);
        assert_eq!(
            h,
            "Received: from client.test (unknown [192.0.2.1])\r\n\tby mx.mesh.test (magicmx) with ESMTP id 00000001\r\n\tfor <a@example.test>;\r\n\tThu, 01 Jan 1970 00:00:00 +0000\r\n"
        );
    }
}
