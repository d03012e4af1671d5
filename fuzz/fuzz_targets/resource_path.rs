//! Resource paths: anything accepted is three safe segments.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(p) = ciel_keybroker::ResourcePath::parse(s) {
            for seg in [p.repository(), p.kind(), p.tag()] {
                assert!(!seg.is_empty() && seg != "." && seg != ".." && !seg.contains('/'));
            }
        }
    }
});
