//! The east stub record decoder (`backend/src/tier/stub.rs`) on arbitrary xattr contents:
//! never panics, and whatever it accepts encodes back to a record that decodes the same.
#![no_main]

use gpair_fuzz::stub;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = stub::decode(data) {
        let again = stub::encode(&rec);
        assert!(
            again.len() <= stub::MAX_STUB_LEN,
            "re-encoded record is too long"
        );
        assert_eq!(
            stub::decode(&again).as_ref(),
            Ok(&rec),
            "encode/decode round trip"
        );
    }
});
