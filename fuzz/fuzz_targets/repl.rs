//! The REPL line splitter: spans inside the line, in order.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen::wire::client::parse_line;

fuzz_target!(|line: &[u8]| {
    let mut spans = Vec::with_capacity(64);
    if parse_line(line, &mut spans).is_ok() {
        let mut last = 0;
        for &(start, end) in &spans {
            assert!(last <= start as usize && start <= end && end as usize <= line.len());
            last = end as usize;
        }
    }
});
