//! The peers-file parser (text lines or JSON) up to, not including, name resolution (which
//! would hit DNS); entries that are literal addresses are parsed as such.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(entries) = pollen::peers::entries(text) {
        assert!(!entries.is_empty() && entries.len() <= pollen::wire::NODES_MAX);
        for entry in &entries {
            let _ = entry.parse::<std::net::SocketAddr>();
        }
    }
});
