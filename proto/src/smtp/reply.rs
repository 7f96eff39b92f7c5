//! SMTP replies with enhanced status codes (RFC 5321 §4.2, RFC 3463).

use std::fmt;

/// One reply: a three-digit code, an optional enhanced status code
/// (`"2.1.0"`), and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub status: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: &str, text: impl Into<String>) -> Reply {
        Reply { code, status: Some(status.to_string()), lines: vec![text.into()] }
    }

    /// A reply without an enhanced status code (greetings, EHLO).
    pub fn plain(code: u16, lines: Vec<String>) -> Reply {
        Reply { code, status: None, lines }
    }

    /// 2xx or 3xx: the command was taken.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx: the client should try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// Wire form, every line ending in CRLF, continuation lines marked `-`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            match &self.status {
                Some(status) => write!(f, "{}{sep}{status} {line}\r\n", self.code)?,
                None => write!(f, "{}{sep}{line}\r\n", self.code)?,
            }
        }
        if self.lines.is_empty() {
            write!(f, "{}\r\n", self.code)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_replies_mark_continuations() {
        let r = Reply::plain(250, vec!["a".into(), "b".into()]);
        assert_eq!(r.to_string(), "250-a\r\n250 b\r\n");
        let r = Reply::new(550, "5.7.1", "no");
        assert_eq!(r.to_string(), "550 5.7.1 no\r\n");
    }
}
