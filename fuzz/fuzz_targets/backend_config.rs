//! The backend's config file (`backend/src/config.rs`): any text parses or fails with an
//! error, and any parsed config validates or fails with an error; nothing panics.
#![no_main]

use gpair_fuzz::config::{Config, RawConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        let _ = Config::build(raw);
    }
});
