//! Object keys on the gateway (`s3fs-gateway/src/keys.rs`) and the backend's west keys
//! (`backend/src/west/keys.rs`) together: a key the gateway accepts maps to a relative path of
//! plain components only (never `..`, `/`, NUL), and every key the backend makes for any east
//! path, file or directory marker, is one the gateway accepts.
#![no_main]

use std::path::Component;

use gpair_fuzz::keys;
use libfuzzer_sys::fuzz_target;
use s3fs_gateway::keys::{ObjectKey, MAX_COMPONENT_BYTES, MAX_KEY_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(k) = ObjectKey::parse(s) {
            assert!(k.as_str().len() <= MAX_KEY_BYTES);
            let rel = k.rel_path();
            for c in rel.components() {
                match c {
                    Component::Normal(n) => {
                        assert!(n.len() <= MAX_COMPONENT_BYTES, "{s:?}");
                        assert!(!n.as_encoded_bytes().contains(&0), "{s:?}");
                    }
                    other => panic!("{s:?} maps to {rel:?} with {other:?}"),
                }
            }
        }
    }
    // The empty path (the bucket itself) never gets a key of its own.
    if data.is_empty() {
        return;
    }
    let west = keys::west_key_for_path(data);
    for key in [west.object_key(false), west.object_key(true)] {
        assert!(
            ObjectKey::parse(&key).is_ok(),
            "the gateway refuses {key:?} (for {data:?}): {:?}",
            ObjectKey::parse(&key)
        );
    }
});
