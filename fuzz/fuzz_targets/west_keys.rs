//! West key escaping (`backend/src/west/keys.rs`): escaping any path gives a key that
//! unescapes to the same bytes, and unescaping any string never panics and, when it gives a
//! path, that path escapes back to the very same key (the bijection the module promises).
#![no_main]

use gpair_fuzz::keys;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = keys::escape_path(data);
    assert_eq!(
        keys::unescape_key(&key).as_deref(),
        Some(data),
        "unescape(escape(path)) for key {key:?}"
    );
    let west = keys::west_key_for_path(data);
    assert_eq!(
        west.full_path().as_deref(),
        Some(data),
        "full path of {west:?}"
    );
    if let Ok(s) = std::str::from_utf8(data) {
        if let Some(path) = keys::unescape_key(s) {
            assert_eq!(keys::escape_path(&path), s, "escape(unescape(key))");
        }
        let _ = keys::full_path_of(s, None);
        let _ = keys::decode_recorded_path(s);
    }
});
