//! The Postfix policy delegation protocol (SMTPD_POLICY_README), server
//! side, sans-I/O: a request is `name=value` lines ended by an empty line,
//! and the answer is `action=…` and an empty line. The reader keeps only
//! what the service uses — the client's address — and ends the connection,
//! rather than buffer, at anything out of bounds: a line longer than
//! [`MAX_LINE`] (Postfix's own `line_length_limit` is 2,048), more than
//! [`MAX_ATTRIBUTES`] attributes in a request, or a line that is no attribute.

use std::net::IpAddr;

/// The longest request line taken, newline included.
pub const MAX_LINE: usize = 4096;
/// The most attributes one request may have (Postfix sends about 40).
pub const MAX_ATTRIBUTES: usize = 100;

/// A whole request, as far as the service cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request {
    /// `client_address`, when present and an address.
    pub client_address: Option<IpAddr>,
}

/// Why the connection is to be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("a request line longer than {MAX_LINE} octets")]
    LineTooLong,
    #[error("a request of more than {MAX_ATTRIBUTES} attributes")]
    TooManyAttributes,
    #[error("a request line that is no name=value attribute")]
    NotAnAttribute,
}

/// Reads requests from the bytes of one connection.
#[derive(Debug, Default)]
pub struct RequestReader {
    /// The line being read (at most [`MAX_LINE`] octets).
    line: Vec<u8>,
    attributes: usize,
    request: Request,
}

impl RequestReader {
    /// Takes in `bytes`; the requests they complete, in order, or the error
    /// that ends the connection (nothing is read after it).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<Vec<Request>, PolicyError> {
        let mut done = vec![];
        while !bytes.is_empty() {
            let (piece, rest, ended) = match bytes.iter().position(|&b| b == b'\n') {
                Some(end) => (&bytes[..end], &bytes[end + 1..], true),
                None => (bytes, &[][..], false),
            };
            if self.line.len() + piece.len() >= MAX_LINE {
                return Err(PolicyError::LineTooLong);
            }
            self.line.extend_from_slice(piece);
            bytes = rest;
            if ended {
                if let Some(request) = self.end_line()? {
                    done.push(request);
                }
            }
        }
        Ok(done)
    }

    fn end_line(&mut self) -> Result<Option<Request>, PolicyError> {
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.is_empty() {
            self.attributes = 0;
            return Ok(Some(std::mem::take(&mut self.request)));
        }
        self.attributes += 1;
        if self.attributes > MAX_ATTRIBUTES {
            return Err(PolicyError::TooManyAttributes);
        }
        let eq = line.iter().position(|&b| b == b'=').ok_or(PolicyError::NotAnAttribute)?;
        if &line[..eq] == b"client_address" {
            self.request.client_address =
                std::str::from_utf8(&line[eq + 1..]).ok().and_then(|a| a.parse().ok());
        }
        Ok(None)
    }
}

/// The answer to a request.
pub fn answer(action: &str) -> String {
    let action: String = action.chars().filter(|c| *c != '\r' && *c != '\n').collect();
    format!("action={action}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_in_any_pieces_and_only_the_address_is_kept() {
        let text =
            b"request=smtpd_access_policy\nclient_address=192.0.2.7\nhelo_name=x\n\nclient_address=::1\n\n";
        for split in 0..text.len() {
            let mut reader = RequestReader::default();
            let mut got = reader.feed(&text[..split]).unwrap();
            got.extend(reader.feed(&text[split..]).unwrap());
            let addresses: Vec<_> = got.iter().map(|r| r.client_address.map(|a| a.to_string())).collect();
            assert_eq!(addresses, [Some("192.0.2.7".into()), Some("::1".into())], "split at {split}");
        }
    }

    #[test]
    fn out_of_bounds_input_ends_the_connection_without_being_kept() {
        let mut reader = RequestReader::default();
        let megabyte = vec![b'x'; 1 << 20];
        assert_eq!(reader.feed(&megabyte), Err(PolicyError::LineTooLong));
        assert!(reader.line.capacity() < 2 * MAX_LINE, "nothing past the limit is buffered");
        let many: String = (0..=MAX_ATTRIBUTES).map(|i| format!("a{i}=b\n")).collect();
        assert_eq!(RequestReader::default().feed(many.as_bytes()), Err(PolicyError::TooManyAttributes));
        assert_eq!(RequestReader::default().feed(b"garbage\n"), Err(PolicyError::NotAnAttribute));
        assert_eq!(answer("DUNNO\r\naction=OK"), "action=DUNNOaction=OK\n\n");
    }
}
