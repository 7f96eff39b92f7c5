//! Fuzzes the policy service's request reader: any bytes from a connection,
//! cut anywhere, give requests or the error that ends the connection; the
//! reader never panics, never holds more than a line, and reads nothing
//! after its error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use magicmx_proto::policy::{answer, RequestReader, MAX_LINE};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else { return };
    let mut reader = RequestReader::default();
    let cut = usize::from(cut).min(data.len());
    let mut requests = 0;
    for piece in [&data[..cut], &data[cut..]] {
        match reader.feed(piece) {
            Ok(done) => {
                for request in done {
                    requests += 1;
                    let text = answer(&format!("{:?}", request.client_address));
                    assert!(text.ends_with("\n\n") && text.matches('\n').count() == 2);
                }
            }
            Err(_) => return,
        }
    }
    // Every request ends with an empty line, so there are no more of them
    // than newlines; and a line never outgrows the limit without an error.
    assert!(requests <= data.iter().filter(|&&b| b == b'\n').count());
    let longest = data.split(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0);
    assert!(longest < MAX_LINE, "a line of {longest} octets was taken");
});
