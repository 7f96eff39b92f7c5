//! The client side of SMTP for delivery: reading a server's (possibly
//! multi-line) replies, reading EHLO capabilities, and dot-stuffing a message
//! for DATA. Pure: bytes in, replies out.

use super::reply::Reply;

/// Longest reply line accepted (RFC 5321 §4.5.3.1.5 says 512; servers send more).
pub const MAX_REPLY_LINE: usize = 2048;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 128;

/// Why a server's reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line does not start with a three-digit code")]
    Syntax,
    #[error("reply lines carry different codes")]
    MixedCodes,
    #[error("reply too long")]
    TooLong,
}

/// Collects bytes from a server and hands out whole replies.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    code: Option<u16>,
    status: Option<String>,
    lines: Vec<String>,
}

impl ReplyReader {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole reply, `Ok(None)` if more bytes are needed. After an
    /// error the connection should be dropped.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let Some(lf) = self.buf.iter().position(|&b| b == b'\n') else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Err(ReplyError::TooLong);
                }
                return Ok(None);
            };
            if lf > MAX_REPLY_LINE {
                return Err(ReplyError::TooLong);
            }
            let line: Vec<u8> = self.buf.drain(..=lf).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            let bytes = line.as_bytes();
            if bytes.len() < 3 || !bytes[..3].iter().all(u8::is_ascii_digit) {
                return Err(ReplyError::Syntax);
            }
            let code: u16 = line[..3].parse().map_err(|_| ReplyError::Syntax)?;
            if !(200..600).contains(&code) {
                return Err(ReplyError::Syntax);
            }
            let last = match bytes.get(3) {
                None | Some(b' ') => true,
                Some(b'-') => false,
                Some(_) => return Err(ReplyError::Syntax),
            };
            if self.code.is_some_and(|c| c != code) {
                return Err(ReplyError::MixedCodes);
            }
            self.code = Some(code);
            let text = line.get(4..).unwrap_or("");
            let text = match split_status(code, text) {
                Some((status, rest)) => {
                    self.status.get_or_insert_with(|| status.to_string());
                    rest
                }
                None => text,
            };
            self.lines.push(text.to_string());
            if self.lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError::TooLong);
            }
            if last {
                let reply =
                    Reply { code, status: self.status.take(), lines: std::mem::take(&mut self.lines) };
                self.code = None;
                return Ok(Some(reply));
            }
        }
    }

    /// True when bytes beyond the replies read so far are buffered.
    pub fn has_pending_bytes(&self) -> bool {
        !self.buf.is_empty()
    }
}

/// An enhanced status code (`x.y.z`, RFC 3463) at the start of reply text,
/// when its class matches the reply code's.
fn split_status(code: u16, text: &str) -> Option<(&str, &str)> {
    let (status, rest) = text.split_once(' ').unwrap_or((text, ""));
    let mut parts = status.split('.');
    let class = parts.next()?;
    let subject = parts.next()?;
    let detail = parts.next()?;
    let digits =
        |s: &str, max: usize| !s.is_empty() && s.len() <= max && s.bytes().all(|b| b.is_ascii_digit());
    let ok = parts.next().is_none()
        && digits(class, 1)
        && digits(subject, 3)
        && digits(detail, 3)
        && class.as_bytes()[0] - b'0' == (code / 100) as u8;
    ok.then_some((status, rest))
}

/// What a server offers in its EHLO reply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    pub starttls: bool,
    pub pipelining: bool,
    pub eight_bit_mime: bool,
    pub smtputf8: bool,
    pub enhanced_status_codes: bool,
    /// The SIZE limit, when announced (0: no fixed limit).
    pub size: Option<usize>,
    /// The attributes XCLIENT takes, when offered (Postfix offers it only to
    /// clients in `smtpd_authorized_xclient_hosts`).
    pub xclient: Option<Vec<String>>,
    /// The attributes XFORWARD takes, when offered.
    pub xforward: Option<Vec<String>>,
}

impl Capabilities {
    /// Reads the keywords of an EHLO reply (the first line is the greeting).
    pub fn from_ehlo(reply: &Reply) -> Capabilities {
        let mut caps = Capabilities::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let keyword = words.next().unwrap_or("").to_ascii_uppercase();
            match keyword.as_str() {
                "STARTTLS" => caps.starttls = true,
                "PIPELINING" => caps.pipelining = true,
                "8BITMIME" => caps.eight_bit_mime = true,
                "SMTPUTF8" => caps.smtputf8 = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "SIZE" => caps.size = Some(words.next().and_then(|n| n.parse().ok()).unwrap_or(0)),
                "XCLIENT" => caps.xclient = Some(words.map(|w| w.to_ascii_uppercase()).collect()),
                "XFORWARD" => caps.xforward = Some(words.map(|w| w.to_ascii_uppercase()).collect()),
                _ => {}
            }
        }
        caps
    }
}

/// An attribute value as XCLIENT and XFORWARD carry it: xtext (RFC 3461
/// §4), where `+`, `=` and octets outside `!`..`~` are `+` and two hex digits.
pub fn xtext(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'+' | b'=' => out.push_str(&format!("+{b:02X}")),
            33..=126 => out.push(b as char),
            _ => out.push_str(&format!("+{b:02X}")),
        }
    }
    out
}

/// The command that hands the next hop `attributes` (name, value) of the
/// original client, keeping those it takes (`offered`, from its EHLO): e.g.
/// `XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE]`. `None` when it takes none.
pub fn client_attributes_command(
    verb: &str,
    attributes: &[(&str, String)],
    offered: &[String],
) -> Option<String> {
    let taken: Vec<String> = attributes
        .iter()
        .filter(|(name, _)| offered.iter().any(|o| o == name))
        .map(|(name, value)| format!("{name}={}", xtext(value)))
        .collect();
    (!taken.is_empty()).then(|| format!("{verb} {}\r\n", taken.join(" ")))
}

/// The message as sent after DATA: lines beginning with `.` get another,
/// the last line is ended, and the terminating `.` line is added.
pub fn dot_stuff(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 64 + 5);
    let mut stuffer = DotStuffer::default();
    stuffer.push(content, &mut out);
    stuffer.finish(&mut out);
    out
}

/// [`dot_stuff`] for content that comes in pieces (read from disk while it
/// is sent): it remembers where the last piece left off.
#[derive(Debug, Clone, Copy)]
pub struct DotStuffer {
    at_line_start: bool,
    /// The last two octets pushed (0 for none).
    tail: [u8; 2],
    empty: bool,
}

impl Default for DotStuffer {
    fn default() -> Self {
        DotStuffer { at_line_start: true, tail: [0; 2], empty: true }
    }
}

impl DotStuffer {
    /// Appends `piece`, stuffed, to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) {
        for &b in piece {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.tail = [self.tail[1], b];
        }
        self.empty &= piece.is_empty();
    }

    /// Ends the last line if it was not, and appends the terminating `.` line.
    pub fn finish(&self, out: &mut Vec<u8>) {
        if !self.empty && self.tail != *b"\r\n" {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xclient_and_xforward_are_read_from_ehlo_and_their_values_are_xtext() {
        let ehlo = Reply::plain(
            250,
            vec![
                "mail.example.test".into(),
                "XCLIENT NAME ADDR PROTO HELO LOGIN".into(),
                "XFORWARD NAME ADDR".into(),
            ],
        );
        let caps = Capabilities::from_ehlo(&ehlo);
        let offered = caps.xclient.unwrap();
        assert_eq!(offered, ["NAME", "ADDR", "PROTO", "HELO", "LOGIN"]);
        assert_eq!(caps.xforward.unwrap(), ["NAME", "ADDR"]);
        let attributes = [
            ("ADDR", "IPV6:2001:db8::1".to_string()),
            ("NAME", "[UNAVAILABLE]".to_string()),
            ("HELO", "odd helo+=name".to_string()),
            ("DESTPORT", "25".to_string()),
        ];
        let command = client_attributes_command("XCLIENT", &attributes, &offered).unwrap();
        assert_eq!(command, "XCLIENT ADDR=IPV6:2001:db8::1 NAME=[UNAVAILABLE] HELO=odd+20helo+2B+3Dname\r\n");
        assert_eq!(client_attributes_command("XFORWARD", &attributes[3..], &["ADDR".into()]), None);
    }

    #[test]
    fn stuffing_in_pieces_is_stuffing_at_once() {
        let content = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nend";
        for split in 0..content.len() {
            let mut stuffer = DotStuffer::default();
            let mut out = vec![];
            stuffer.push(&content[..split], &mut out);
            stuffer.push(&content[split..], &mut out);
            stuffer.finish(&mut out);
            assert_eq!(out, dot_stuff(content), "split at {split}");
        }
        assert_eq!(dot_stuff(b""), b".\r\n");
        assert_eq!(dot_stuff(b"a\r\n"), b"a\r\n.\r\n");
    }

    fn read_all(bytes: &[u8]) -> Vec<Result<Option<Reply>, ReplyError>> {
        let mut reader = ReplyReader::default();
        reader.push(bytes);
        let mut out = vec![];
        loop {
            let r = reader.next_reply();
            let stop = !matches!(r, Ok(Some(_)));
            out.push(r);
            if stop {
                return out;
            }
        }
    }

    #[test]
    fn single_and_multi_line_replies_are_read_whole() {
        let got = read_all(
            b"220 mx.test ESMTP\r\n250-mx.test\r\n250-SIZE 1000\r\n250 STARTTLS\r\n550 5.7.23 SPF fail\r\n",
        );
        let r0 = got[0].clone().unwrap().unwrap();
        assert_eq!((r0.code, r0.lines.clone()), (220, vec!["mx.test ESMTP".to_string()]));
        let r1 = got[1].clone().unwrap().unwrap();
        assert_eq!(r1.lines.len(), 3);
        let caps = Capabilities::from_ehlo(&r1);
        assert!(caps.starttls && !caps.pipelining);
        assert_eq!(caps.size, Some(1000));
        let r2 = got[2].clone().unwrap().unwrap();
        assert_eq!((r2.code, r2.status.as_deref(), r2.lines[0].as_str()), (550, Some("5.7.23"), "SPF fail"));
        assert_eq!(got[3], Ok(None));
    }

    #[test]
    fn replies_may_arrive_in_pieces() {
        let mut reader = ReplyReader::default();
        reader.push(b"250-a\r\n25");
        assert_eq!(reader.next_reply(), Ok(None));
        reader.push(b"0 b\r\n");
        assert_eq!(reader.next_reply().unwrap().unwrap().lines, vec!["a", "b"]);
    }

    #[test]
    fn broken_replies_are_errors() {
        assert_eq!(read_all(b"hello\r\n")[0], Err(ReplyError::Syntax));
        assert_eq!(read_all(b"250-a\r\n251 b\r\n")[0], Err(ReplyError::MixedCodes));
        assert_eq!(read_all(b"250xa\r\n")[0], Err(ReplyError::Syntax));
        assert_eq!(read_all(&vec![b'2'; 5000])[0], Err(ReplyError::TooLong));
        assert_eq!(read_all(b"999 no\r\n")[0], Err(ReplyError::Syntax));
    }

    #[test]
    fn a_status_of_the_wrong_class_is_text() {
        let r = read_all(b"250 5.0.0 odd\r\n")[0].clone().unwrap().unwrap();
        assert_eq!((r.status, r.lines[0].as_str()), (None, "5.0.0 odd"));
    }

    #[test]
    fn dot_stuffing_doubles_leading_dots_and_terminates() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(dot_stuff(b".x"), b"..x\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
