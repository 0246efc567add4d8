//! A worker's log as found on disk: replay must stop at the first torn or corrupt record, count
//! every byte as replayed or dropped, and hand out only records that encode back to the bytes
//! they came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen::journal::{Record, replay};

fuzz_target!(|input: &[u8]| {
    let mut at = 0usize;
    let replayed = replay(input, &mut |record: Record<'_>| {
        let mut encoded = Vec::new();
        record.append_to(&mut encoded);
        assert_eq!(&input[at..at + encoded.len()], &encoded[..]);
        at += encoded.len();
    })
    .expect("reading a slice cannot fail");
    assert_eq!(replayed.valid_bytes as usize, at);
    assert_eq!(at + replayed.dropped_bytes as usize, input.len());
});
