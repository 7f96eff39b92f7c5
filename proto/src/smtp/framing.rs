//! Splits the client's byte stream into lines, flagging bare CR / bare LF and
//! lines over the limit, with memory bounded by that limit. Commands over the
//! limit are dropped; message text over it is handed out in pieces.

/// One line in the input buffer, without its line ending.
#[derive(Debug, Clone, Copy)]
pub(super) struct Line {
    start: usize,
    end: usize,
    /// It ended in LF without CR, or held a CR not followed by LF.
    pub bare_line_ending: bool,
    /// It ended in CR LF (a bare CR may still be inside).
    pub ends_in_crlf: bool,
    /// It was longer than the limit; its content was dropped.
    pub too_long: bool,
    /// The rest of a line of text that went over the limit: not the start of
    /// a line in the client's stream (see [`Input::next_text_line`]).
    pub continued: bool,
}

#[derive(Debug, Default)]
pub(super) struct Input {
    buf: Vec<u8>,
    pos: usize,
    /// Inside a line that went over the limit: drop bytes until its LF.
    skipping: bool,
    /// The last byte dropped was a CR (the line may yet end in CR LF).
    skipped_cr: bool,
    /// A line of text was cut at the limit: the next piece continues it.
    continuing: bool,
}

impl Input {
    pub fn push(&mut self, data: &[u8]) {
        if self.pos > 0 && self.pos == self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 64 * 1024 && self.pos * 2 > self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// True when nothing waits to be read.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    pub fn clear(&mut self) {
        self.buf.clear();
        self.pos = 0;
        self.skipping = false;
        self.skipped_cr = false;
        self.continuing = false;
    }

    pub fn bytes(&self, line: &Line) -> &[u8] {
        &self.buf[line.start..line.end]
    }

    /// The next complete line, if one is buffered. `limit` counts the line
    /// ending. A longer line is returned once, when its LF arrives, with
    /// `too_long` set and no content.
    pub fn next_line(&mut self, limit: usize) -> Option<Line> {
        let rest = &self.buf[self.pos..];
        let lf = rest.iter().position(|&b| b == b'\n');
        let Some(i) = lf else {
            if self.skipping || rest.len() >= limit {
                self.skipping = true;
                self.skipped_cr = rest.last().map_or(self.skipped_cr, |&b| b == b'\r');
                self.pos = self.buf.len();
            }
            return None;
        };
        let crlf = if i > 0 { rest[i - 1] == b'\r' } else { self.skipping && self.skipped_cr };
        if std::mem::take(&mut self.skipping) || i + 1 > limit {
            self.pos += i + 1;
            let at = self.pos;
            return Some(Line {
                start: at,
                end: at,
                bare_line_ending: false,
                ends_in_crlf: crlf,
                too_long: true,
                continued: false,
            });
        }
        Some(self.line_to(i, crlf))
    }

    /// The next line of message text, if one is buffered. A line longer than
    /// `limit` (counting its line ending) is not dropped: it is handed out in
    /// pieces of `limit - 3` octets, each to be written out as a line of its
    /// own, the pieces after the first with `continued` set (and room left
    /// for the space that begins them). This is what Postfix does with such
    /// a line (it breaks it at 998 octets with CR LF SPACE), and memory stays
    /// bounded by `limit` all the same.
    pub fn next_text_line(&mut self, limit: usize) -> Option<Line> {
        let rest = &self.buf[self.pos..];
        let continued = std::mem::take(&mut self.continuing);
        let line = match rest.iter().take(limit).position(|&b| b == b'\n') {
            Some(i) => self.line_to(i, i > 0 && rest[i - 1] == b'\r'),
            None if rest.len() >= limit => {
                let (start, end) = (self.pos, self.pos + limit - 3);
                self.pos = end;
                self.continuing = true;
                let bare_cr = self.buf[start..end].contains(&b'\r');
                Line { start, end, bare_line_ending: bare_cr, ends_in_crlf: true, too_long: false, continued }
            }
            None => {
                self.continuing = continued;
                return None;
            }
        };
        Some(Line { continued, ..line })
    }

    /// The line whose LF is `i` octets on from the read position.
    fn line_to(&mut self, i: usize, crlf: bool) -> Line {
        let start = self.pos;
        self.pos += i + 1;
        let end = if crlf { start + i - 1 } else { start + i };
        let bare_cr = self.buf[start..end].contains(&b'\r');
        Line {
            start,
            end,
            bare_line_ending: !crlf || bare_cr,
            ends_in_crlf: crlf,
            too_long: false,
            continued: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &mut Input, limit: usize) -> Vec<(Vec<u8>, bool, bool)> {
        let mut out = vec![];
        while let Some(l) = input.next_line(limit) {
            out.push((input.bytes(&l).to_vec(), l.bare_line_ending, l.too_long));
        }
        out
    }

    #[test]
    fn crlf_lines_split_cleanly_across_pushes() {
        let mut input = Input::default();
        input.push(b"EHLO a\r\nNO");
        assert_eq!(lines(&mut input, 512), vec![(b"EHLO a".to_vec(), false, false)]);
        input.push(b"OP\r\n");
        assert_eq!(lines(&mut input, 512), vec![(b"NOOP".to_vec(), false, false)]);
        assert!(input.is_empty());
    }

    #[test]
    fn bare_lf_and_bare_cr_are_flagged() {
        let mut input = Input::default();
        input.push(b"a\nb\rc\r\n");
        let got = lines(&mut input, 512);
        assert_eq!(got[0], (b"a".to_vec(), true, false));
        assert_eq!(got[1], (b"b\rc".to_vec(), true, false));
    }

    #[test]
    fn over_long_line_is_reported_once_and_not_kept() {
        let mut input = Input::default();
        input.push(&[b'x'; 600]);
        assert!(input.next_line(512).is_none());
        input.push(&[b'y'; 600]);
        assert!(input.next_line(512).is_none());
        assert!(input.buf.len() - input.pos == 0);
        input.push(b"zz\r\nNOOP\r\n");
        let got = lines(&mut input, 512);
        assert_eq!(got, vec![(vec![], false, true), (b"NOOP".to_vec(), false, false)]);
    }

    #[test]
    fn an_over_long_line_tells_whether_it_ended_in_crlf() {
        let mut input = Input::default();
        input.push(&[b'x'; 600]);
        input.push(b"\r");
        assert!(input.next_line(512).is_none());
        input.push(b"\n");
        let line = input.next_line(512).unwrap();
        assert!(line.too_long && line.ends_in_crlf);
        input.push(&[b'x'; 600]);
        input.push(b"\n");
        let line = input.next_line(512).unwrap();
        assert!(line.too_long && !line.ends_in_crlf);
    }

    fn text_lines(input: &mut Input, limit: usize) -> Vec<(Vec<u8>, bool)> {
        let mut out = vec![];
        while let Some(l) = input.next_text_line(limit) {
            assert!(!l.too_long);
            out.push((input.bytes(&l).to_vec(), l.continued));
        }
        out
    }

    #[test]
    fn an_over_long_line_of_text_comes_in_pieces_and_nothing_is_lost() {
        let mut input = Input::default();
        let mut long = vec![b'a'; 10];
        long.extend([b'b'; 10]);
        long.extend([b'c'; 3]);
        input.push(&long[..15]);
        assert_eq!(text_lines(&mut input, 13), vec![(vec![b'a'; 10], false)]);
        input.push(&long[15..]);
        input.push(b"\r\n.\r\n");
        let got = text_lines(&mut input, 13);
        assert_eq!(got, vec![(vec![b'b'; 10], true), (vec![b'c'; 3], true), (b".".to_vec(), false)]);
    }

    #[test]
    fn a_line_of_text_that_fits_with_its_ending_is_not_cut() {
        let mut input = Input::default();
        input.push(&[b'a'; 10]);
        assert!(input.next_text_line(12).is_none(), "waits for its ending");
        input.push(b"\r\n");
        let line = input.next_text_line(12).unwrap();
        assert!(!line.continued && line.ends_in_crlf && !line.bare_line_ending);
        assert_eq!(input.bytes(&line), &[b'a'; 10]);
    }

    #[test]
    fn limit_counts_the_line_ending() {
        let mut input = Input::default();
        let mut line = vec![b'a'; 510];
        line.extend_from_slice(b"\r\n");
        input.push(&line);
        assert!(!input.next_line(512).unwrap().too_long);
        line.insert(0, b'a');
        input.push(&line);
        assert!(input.next_line(512).unwrap().too_long);
    }
}
