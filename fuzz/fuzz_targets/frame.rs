//! vsock control frames in arbitrary chunkings.
#![no_main]
use ciel_protocol::frame::Decoder;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut d = Decoder::new();
    for chunk in data.chunks(7) {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => assert!(f.len() <= ciel_protocol::frame::MAX_FRAME),
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
