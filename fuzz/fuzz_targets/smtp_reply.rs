//! Fuzzes the delivery client's reply reader: any bytes from a hostile or
//! broken server, in any split, give whole replies or an error, never a
//! panic, and never a reply the RFC does not allow.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magicmx_proto::smtp::client::{Capabilities, ReplyReader, MAX_REPLY_LINES};

fuzz_target!(|data: &[u8]| {
    let Some((&split, data)) = data.split_first() else { return };
    let mut reader = ReplyReader::default();
    let step = usize::from(split).max(1);
    for chunk in data.chunks(step) {
        reader.push(chunk);
        loop {
            match reader.next_reply() {
                Ok(Some(reply)) => {
                    assert!((200..600).contains(&reply.code));
                    assert!(!reply.lines.is_empty() && reply.lines.len() <= MAX_REPLY_LINES);
                    let _ = Capabilities::from_ehlo(&reply);
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
