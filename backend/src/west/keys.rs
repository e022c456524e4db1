//! East paths ↔ west keys: a reversible escaping that keeps ordinary names readable and never
//! produces a key the gateway (or S3) refuses. The full description, with examples, is in
//! `docs/west-keys.md`.
//!
//! - The key of an entry is the escaped **full path** of the entry relative to the bucket:
//!   `<share prefix>/<path relative to the share>`, escaped component by component.
//! - Inside a component only `%`, backslash, control characters (C0, DEL and C1), the XML
//!   non-characters U+FFFE/U+FFFF and bytes that are not valid UTF-8 are escaped, as `%XX`
//!   (upper-case hex) per byte. The components `.`, `..` and `.gpair-long` escape their first
//!   dot (`%2E`); an empty component (never produced by a real path) is written `%2F`.
//! - When the escaped key would exceed 1023 bytes (so that the `dir/` marker still fits in
//!   S3's 1024) or a component would exceed 255 bytes (NAME_MAX on the gateway's filesystem),
//!   the entry is stored under `.gpair-long/<sha256 hex of the full path>` at the root of the
//!   bucket, and the full path is recorded, base64url, in `x-amz-meta-gpair-path`
//!   ([`WestKey::long_path`]). Such keys depend only on the full path, never on where the
//!   share prefix ends, so a directory rename can recompute every key below it.
//!
//! Decoding is strict: a key decodes only if escaping the decoded path gives the very same key,
//! so key ↔ path is a bijection and a foreign object never masquerades as an entry.

use base64::Engine as _;
use sha2::Digest as _;

/// Longest object key S3 accepts, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest path component the gateway's filesystem accepts (NAME_MAX).
pub const MAX_COMPONENT_BYTES: usize = 255;
/// Longest key of an entry without the trailing `/` of a directory marker.
pub const MAX_ENTRY_KEY_BYTES: usize = MAX_KEY_BYTES - 1;
/// The directory, at the root of the bucket, that holds entries whose key would be too long.
pub const LONG_DIR: &str = ".gpair-long";
/// [`LONG_DIR`] as a key prefix.
pub const LONG_PREFIX: &str = ".gpair-long/";
/// The user-metadata name (`x-amz-meta-gpair-path`) of the recorded full path of a long key.
pub const PATH_META: &str = "gpair-path";
/// How an empty component (`a//b`) is written; a real component never contains `/`.
const EMPTY_COMPONENT: &str = "%2F";

/// The west key of one east entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WestKey {
    /// The object key, without the trailing `/` of directories.
    pub key: String,
    /// For keys that had to be shortened: the full relative path, recorded in metadata.
    /// "Full" means relative to the bucket: the share prefix, `/`, then the path relative to
    /// the share (see [`join_path`]).
    pub long_path: Option<Vec<u8>>,
}

impl WestKey {
    /// The object key to use: `key/` for a directory marker, `key` otherwise.
    pub fn object_key(&self, is_dir: bool) -> String {
        if is_dir {
            format!("{}/", self.key)
        } else {
            self.key.clone()
        }
    }

    /// Whether the entry lives under `.gpair-long/` with its path in metadata.
    pub fn is_long(&self) -> bool {
        self.long_path.is_some()
    }

    /// The full path (relative to the bucket) this key stands for; `None` for a key that is
    /// not in canonical form (built by hand, not by [`west_key`]).
    pub fn full_path(&self) -> Option<Vec<u8>> {
        match &self.long_path {
            Some(p) => Some(p.clone()),
            None => unescape_key(&self.key),
        }
    }

    /// The value of `x-amz-meta-gpair-path` for long keys.
    pub fn recorded_path(&self) -> Option<String> {
        self.long_path.as_deref().map(encode_recorded_path)
    }
}

/// The key of the east entry at `rel` (relative to the share) in a share whose west prefix is
/// `prefix` (`""` or `"a/b"`; slashes at either end are ignored). `rel` is raw bytes: any
/// byte string gives a valid, reversible key. `rel = b""` names the share root itself.
pub fn west_key(prefix: &str, rel: &[u8]) -> WestKey {
    west_key_for_path(&join_path(prefix, rel))
}

/// The key of a full path (relative to the bucket).
pub fn west_key_for_path(full: &[u8]) -> WestKey {
    let escaped = escape_path(full);
    if fits(&escaped) {
        WestKey {
            key: escaped,
            long_path: None,
        }
    } else {
        WestKey {
            key: long_key(full),
            long_path: Some(full.to_vec()),
        }
    }
}

/// `prefix/rel` as raw bytes (just `rel` for an empty prefix, just `prefix` for an empty
/// `rel`).
pub fn join_path(prefix: &str, rel: &[u8]) -> Vec<u8> {
    let prefix = prefix.trim_matches('/').as_bytes();
    let mut out = Vec::with_capacity(prefix.len() + 1 + rel.len());
    out.extend_from_slice(prefix);
    if !prefix.is_empty() && !rel.is_empty() {
        out.push(b'/');
    }
    out.extend_from_slice(rel);
    out
}

/// `rel` of a full path in the share whose prefix is `prefix`, if the path is in that share.
pub fn strip_prefix(prefix: &str, full: &[u8]) -> Option<Vec<u8>> {
    let prefix = prefix.trim_matches('/').as_bytes();
    if prefix.is_empty() {
        return Some(full.to_vec());
    }
    if full == prefix {
        return Some(Vec::new());
    }
    full.strip_prefix(prefix)?
        .strip_prefix(b"/")
        .map(<[u8]>::to_vec)
}

/// The east path relative to the share whose prefix is `prefix`, of the object `key` (a
/// trailing `/` of a directory marker is ignored). `recorded_path` is the value of
/// `x-amz-meta-gpair-path`, needed for `.gpair-long/` keys. `None` when the key is not one
/// [`west_key`] produces for that share.
pub fn rel_path_of(prefix: &str, key: &str, recorded_path: Option<&str>) -> Option<Vec<u8>> {
    strip_prefix(prefix, &full_path_of(key, recorded_path)?)
}

/// The full path (relative to the bucket) of the object `key`; see [`rel_path_of`].
pub fn full_path_of(key: &str, recorded_path: Option<&str>) -> Option<Vec<u8>> {
    let key = key.strip_suffix('/').unwrap_or(key);
    let full = if key.starts_with(LONG_PREFIX) {
        decode_recorded_path(recorded_path?)?
    } else {
        unescape_key(key)?
    };
    // Canonical form only: the key must be exactly the one we would produce.
    (west_key_for_path(&full).key == key).then_some(full)
}

/// The S3 listing prefix of every key of the share (or subtree) `prefix`: the escaped prefix
/// followed by `/`, or `""` for the whole bucket.
pub fn list_prefix(prefix: &str) -> String {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", escape_path(prefix.as_bytes()))
    }
}

/// `x-amz-meta-gpair-path` of a full path: unpadded base64url.
pub fn encode_recorded_path(full: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(full)
}

/// Inverse of [`encode_recorded_path`] (padding tolerated).
pub fn decode_recorded_path(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(v.trim().trim_end_matches('='))
        .ok()
}

/// `.gpair-long/<sha256 hex of the full path>`.
pub fn long_key(full: &[u8]) -> String {
    format!("{LONG_PREFIX}{}", hex::encode(sha2::Sha256::digest(full)))
}

/// Whether an escaped key can be used as is.
fn fits(escaped: &str) -> bool {
    escaped.len() <= MAX_ENTRY_KEY_BYTES
        && escaped.split('/').all(|c| c.len() <= MAX_COMPONENT_BYTES)
}

/// Escapes every component of a full path (see the module docs). `b""` gives `""`.
pub fn escape_path(full: &[u8]) -> String {
    let mut out = String::with_capacity(full.len() + 8);
    if full.is_empty() {
        return out;
    }
    for (i, component) in full.split(|&b| b == b'/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        escape_component(component, &mut out);
    }
    out
}

fn needs_escape(c: char) -> bool {
    c == '%' || c == '\\' || c.is_control() || c == '\u{FFFE}' || c == '\u{FFFF}'
}

fn push_byte(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xf)]));
}

fn escape_component(component: &[u8], out: &mut String) {
    match component {
        b"" => return out.push_str(EMPTY_COMPONENT),
        b"." => return out.push_str("%2E"),
        b".." => return out.push_str("%2E%2E"),
        c if c == LONG_DIR.as_bytes() => {
            out.push_str("%2E");
            out.push_str(&LONG_DIR[1..]);
            return;
        }
        _ => {}
    }
    for chunk in component.utf8_chunks() {
        for c in chunk.valid().chars() {
            if needs_escape(c) {
                let mut buf = [0u8; 4];
                for &b in c.encode_utf8(&mut buf).as_bytes() {
                    push_byte(out, b);
                }
            } else {
                out.push(c);
            }
        }
        for &b in chunk.invalid() {
            push_byte(out, b);
        }
    }
}

/// Inverse of [`escape_path`] for canonical keys; `None` for anything else.
pub fn unescape_key(key: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(key.len());
    if key.is_empty() {
        return Some(out);
    }
    for (i, component) in key.split('/').enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(&unescape_component(component)?);
    }
    // A lone `%2F` would decode to the empty path, whose key is "" (found by fuzzing).
    if out.is_empty() {
        return None;
    }
    Some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn unescape_component(component: &str) -> Option<Vec<u8>> {
    if component == EMPTY_COMPONENT {
        return Some(Vec::new());
    }
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex_digit(*bytes.get(i + 1)?)?;
            let lo = hex_digit(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let mut again = String::with_capacity(component.len());
    escape_component(&out, &mut again);
    (again == component).then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use s3fs_gateway::keys::ObjectKey;

    /// The gateway's own key validation, for the entry key and its directory marker.
    fn assert_gateway_accepts(k: &WestKey, what: &[u8]) {
        for key in [k.object_key(false), k.object_key(true)] {
            assert!(
                ObjectKey::parse(&key).is_ok(),
                "gateway refuses {key:?} (from {what:?}): {:?}",
                ObjectKey::parse(&key)
            );
        }
        if let Some(p) = k.recorded_path() {
            assert!(p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }

    fn round_trip(prefix: &str, rel: &[u8]) -> WestKey {
        let k = west_key(prefix, rel);
        assert_gateway_accepts(&k, rel);
        let recorded = k.recorded_path();
        assert_eq!(
            rel_path_of(prefix, &k.key, recorded.as_deref()).as_deref(),
            Some(rel),
            "round trip of {rel:?} under {prefix:?} via {k:?}"
        );
        // The directory marker decodes to the same path.
        assert_eq!(
            rel_path_of(prefix, &k.object_key(true), recorded.as_deref()).as_deref(),
            Some(rel)
        );
        assert_eq!(k.full_path(), Some(join_path(prefix, rel)));
        k
    }

    #[test]
    fn ordinary_names_stay_readable() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("", b"a", "a"),
            ("share", b"a/b/c.txt", "share/a/b/c.txt"),
            (
                "x/y",
                b"dir with spaces/f+g=h&i.txt",
                "x/y/dir with spaces/f+g=h&i.txt",
            ),
            ("", "ünïcödé/€/日本語".as_bytes(), "ünïcödé/€/日本語"),
            ("p", b".hidden/..a/a..", "p/.hidden/..a/a.."),
            ("/p/", b"a", "p/a"),
            ("p", b"", "p"),
        ];
        for (prefix, rel, want) in cases {
            let k = round_trip(prefix, rel);
            assert_eq!(k.key, *want);
            assert!(!k.is_long());
        }
    }

    #[test]
    fn escapes_what_the_gateway_refuses() {
        let cases: &[(&[u8], &str)] = &[
            (b"100%", "100%25"),
            (b"%41", "%2541"),
            (b"back\\slash", "back%5Cslash"),
            (b"new\nline", "new%0Aline"),
            (b"tab\tnul\0", "tab%09nul%00"),
            (b"del\x7f", "del%7F"),
            ("c1\u{85}".as_bytes(), "c1%C2%85"),
            ("nonchar\u{FFFF}".as_bytes(), "nonchar%EF%BF%BF"),
            (b"latin1-\xe9t\xe9", "latin1-%E9t%E9"),
            (b"truncated-\xe2\x82", "truncated-%E2%82"),
            (b"./..", "%2E/%2E%2E"),
            (b".gpair-long/x", "%2Egpair-long/x"),
            (b"a/.gpair-long", "a/%2Egpair-long"),
            (b".gpair-longer", ".gpair-longer"),
            (b"a//b", "a/%2F/b"),
            (b"/abs", "%2F/abs"),
            (b"trail/", "trail/%2F"),
            (b"%2F", "%252F"),
        ];
        for (rel, want) in cases {
            let k = round_trip("", rel);
            assert_eq!(k.key, *want, "{rel:?}");
        }
        assert_eq!(west_key("s", b"a\nb").key, "s/a%0Ab");
    }

    #[test]
    fn long_names_and_paths_use_the_long_dir() {
        // A 255-byte component fits; 256 does not.
        let k = round_trip("p", &[b'x'; 255]);
        assert!(!k.is_long());
        let k = round_trip("p", &[b'x'; 256]);
        assert!(k.is_long());
        assert!(k.key.starts_with(LONG_PREFIX) && k.key.len() == LONG_PREFIX.len() + 64);
        assert_eq!(
            k.long_path.as_deref(),
            Some(join_path("p", &[b'x'; 256]).as_slice())
        );
        // A component that only grows past 255 bytes by escaping.
        let k = round_trip("", &[0xff; 100]);
        assert!(k.is_long());
        // Total length: 1023 bytes fit (the marker is then 1024), 1024 do not.
        let rel: Vec<u8> = (0..1023)
            .map(|i| if i % 200 == 199 { b'/' } else { b'a' })
            .collect();
        assert!(!round_trip("", &rel).is_long());
        let mut rel2 = rel.clone();
        rel2.push(b'b');
        assert!(round_trip("", &rel2).is_long());
        // The long key depends on the full path only.
        assert_eq!(
            west_key("a", &rel2).key,
            west_key("", &join_path("a", &rel2)).key
        );
    }

    #[test]
    fn foreign_and_non_canonical_keys_do_not_decode() {
        for key in [
            "a%41",           // %41 is 'A', which is never escaped
            "a%2e",           // lower-case hex
            "a%",             // truncated escape
            "a%zz",           // not hex
            "a//b",           // empty component must be %2F
            "x%2Fy",          // %2F only as a whole component
            ".gpair-long/zz", // long key without a recorded path
            "./a",
            "a/.gpair-long/x",
            "%2F", // the empty path's key is "" (fuzz/west_keys found this one)
        ] {
            assert_eq!(full_path_of(key, None), None, "{key:?}");
            assert_eq!(unescape_key(key), None, "{key:?}");
        }
        // A recorded path that does not hash to the key.
        let k = west_key("", &[b'y'; 300]);
        let other = encode_recorded_path(&[b'z'; 300]);
        assert_eq!(full_path_of(&k.key, Some(&other)), None);
        // A short path recorded under a long key.
        let short = encode_recorded_path(b"short");
        assert_eq!(full_path_of(&long_key(b"short"), Some(&short)), None);
        // Keys of another share.
        assert_eq!(rel_path_of("a/b", "a/bc/d", None), None);
        assert_eq!(rel_path_of("a/b", "a/b/c", None), Some(b"c".to_vec()));
        assert_eq!(rel_path_of("a/b", "a/b/", None), Some(Vec::new()));
    }

    #[test]
    fn list_prefixes() {
        assert_eq!(list_prefix(""), "");
        assert_eq!(list_prefix("/"), "");
        assert_eq!(list_prefix("a/b"), "a/b/");
        assert_eq!(list_prefix("a/b/"), "a/b/");
        assert_eq!(list_prefix("a%b"), "a%25b/");
    }

    /// Property test: random byte paths round-trip, and every key they give is one the gateway
    /// accepts (checked with the gateway's own parser).
    #[test]
    fn random_paths_round_trip_and_are_valid_keys() {
        const ALPHABET: &[&[u8]] = &[
            b"a",
            b"Z",
            b"0",
            b".",
            b"..",
            b"/",
            b"%",
            b"%2F",
            b"%25",
            b"\\",
            b"\n",
            b"\0",
            b"\x7f",
            b" ",
            b"+",
            b"~",
            b"\x80",
            b"\xff",
            b"\xc2\x85",
            b"\xef\xbf\xbf",
            "é".as_bytes(),
            "€".as_bytes(),
            "😀".as_bytes(),
            b".gpair-long",
            b"-",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0067_7061_6972);
        let prefixes = ["", "s", "share/prefix", "a b/c"];
        for i in 0..20_000 {
            let pieces = match i % 10 {
                0 => rng.gen_range(100..700), // long paths
                _ => rng.gen_range(1..24),
            };
            let mut rel = Vec::new();
            for _ in 0..pieces {
                if rng.gen_bool(0.1) {
                    let n = rng.gen_range(1..300);
                    rel.extend(std::iter::repeat_n(b'q', n));
                } else {
                    rel.extend_from_slice(ALPHABET[rng.gen_range(0..ALPHABET.len())]);
                }
            }
            if i % 7 == 0 {
                // Arbitrary bytes.
                rel = (0..rng.gen_range(1..64)).map(|_| rng.gen()).collect();
            }
            let prefix = prefixes[i % prefixes.len()];
            round_trip(prefix, &rel);
        }
    }
}
