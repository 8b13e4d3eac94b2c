//! Any bytes given as `proxy.toml`: a config or an error placed in the
//! file, never a panic. Host names are not resolved (no network).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = switchyard::config::parse_offline(Path::new("fuzz.toml"), src) {
        if let Some(p) = &e.position {
            assert!(p.line >= 1 && p.line <= src.split('\n').count());
        }
        let _ = e.to_string();
    }
});
