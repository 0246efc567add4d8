//! The request parser (RESP2 arrays and inline commands) on a stream of pipelined requests:
//! every parsed request must lie inside the input, make progress, and have argument spans
//! inside it; errors end the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen::wire::client::parse_request;

fuzz_target!(|input: &[u8]| {
    let mut input = input.to_vec();
    let mut spans = Vec::with_capacity(64);
    let mut at = 0;
    while at < input.len() {
        match parse_request(&mut input[at..], &mut spans) {
            Ok(Some(used)) => {
                assert!(used > 0 && at + used <= input.len());
                for &(start, end) in &spans {
                    assert!(start <= end && end as usize <= used);
                }
                at += used;
            }
            Ok(None) | Err(_) => return,
        }
    }
});
