//! The gateway's config file (`s3fs-gateway/src/config.rs`): any text parses or fails with
//! an error, and any parsed config validates or fails with an error; nothing panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use s3fs_gateway::{Config, Overrides, RawConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        // The root must exist for validation to get past it; /tmp always does.
        let flags = Overrides {
            root: Some(std::env::temp_dir()),
            ..Overrides::default()
        };
        let _ = Config::build(raw, flags);
    }
});
