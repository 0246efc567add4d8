//! The line splitter (REPL lines and inline commands): spans inside the line, in order, and
//! never longer in total than the line (escapes are undone in place).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen::wire::client::split_args;

fuzz_target!(|line: &[u8]| {
    let mut line = line.to_vec();
    let mut spans = Vec::with_capacity(64);
    if split_args(&mut line, &mut spans).is_ok() {
        let mut last = 0;
        for &(start, end) in &spans {
            assert!(last <= start as usize && start <= end && end as usize <= line.len());
            last = end as usize;
        }
    }
});
