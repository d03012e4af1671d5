//! CC event logs.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = ciel_images::ccel::replay(data);
});
