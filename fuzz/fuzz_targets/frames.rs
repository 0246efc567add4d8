//! The frame reassembler and decoder, as the driver uses them: bytes arrive in chunks (sizes
//! taken from the input) into a fixed buffer; complete frames are cut with `frame_len` and
//! decoded; the first error ends the connection. Every decoded message must re-encode within
//! the frame limit and decode again to the same kind.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pollen::wire::{self, FRAME_BYTES_MAX, Message};

fuzz_target!(|input: &[u8]| {
    let Some((&chunking, data)) = input.split_first() else {
        return;
    };
    let chunk = 1 + chunking as usize * 7;
    let mut buffer = vec![0u8; 2 * FRAME_BYTES_MAX];
    let mut filled = 0;
    let mut scratch = vec![0u8; FRAME_BYTES_MAX];
    for piece in data.chunks(chunk) {
        buffer[filled..filled + piece.len()].copy_from_slice(piece);
        filled += piece.len();
        let mut at = 0;
        loop {
            match wire::frame_len(&buffer[at..filled]) {
                Ok(None) => break,
                Err(_) => return,
                Ok(Some(length)) => {
                    assert!(length <= FRAME_BYTES_MAX && at + length <= filled);
                    let frame = &buffer[at..at + length];
                    let Ok(message) = Message::decode(frame) else {
                        return;
                    };
                    let encoded = message.encoded_len();
                    assert!(encoded <= FRAME_BYTES_MAX, "{:?}", message.kind());
                    let written = message.encode(&mut scratch[..encoded]);
                    assert_eq!(written, encoded);
                    let again = Message::decode(&scratch[..written]).expect("re-encoded decodes");
                    assert_eq!(again.kind(), message.kind());
                    at += length;
                }
            }
        }
        buffer.copy_within(at..filled, 0);
        filled -= at;
    }
});
