//! JWE responses opened by the guest's key: never panics, never opens a
//! forgery.
#![no_main]
use ciel_protocol::jwe::{Jwe, TeeKeyPair};
use std::sync::OnceLock;
static KEY: OnceLock<TeeKeyPair> = OnceLock::new();
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(TeeKeyPair::generate);
    if let Ok(jwe) = serde_json::from_slice::<Jwe>(data) {
        assert!(key.decrypt(&jwe).is_err(), "a JWE not made for this key opened");
    }
});
