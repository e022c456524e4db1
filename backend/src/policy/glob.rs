//! Path globs of policy rules, matched against paths relative to the share (raw bytes).
//!
//! - `*` matches any run of bytes within one path component, `?` one byte (never `/`);
//!   `**` matches any run, `/` included.
//! - A pattern without `/` (but for a trailing one) matches a component at any depth
//!   (`*.db` keeps every database file hot wherever it is; `tmp/` every `tmp` directory).
//! - A pattern with a `/` inside is anchored at the share root (`ads/*.log`).
//! - A trailing `/` makes it a directory: everything below it matches (`ads/`).

/// A parsed glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    text: String,
    pattern: Vec<u8>,
    /// Matched against the last component only.
    basename: bool,
    /// A directory: everything below it matches.
    dir: bool,
}

impl Glob {
    /// Parses a pattern; refuses what cannot mean anything (empty, NUL, a lone `/`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an empty glob matches nothing".into());
        }
        if text.contains('\0') {
            return Err(format!("glob {text:?} contains a NUL byte"));
        }
        let trimmed = text.trim_start_matches('/');
        let dir = trimmed.ends_with('/');
        let body = trimmed.trim_end_matches('/');
        if body.is_empty() {
            return Err(format!("glob {text:?} names no file or directory"));
        }
        Ok(Self {
            text: text.to_owned(),
            pattern: body.as_bytes().to_vec(),
            basename: !body.contains('/'),
            dir,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the relative path `rel` (no leading `/`) matches.
    pub fn matches(&self, rel: &[u8]) -> bool {
        if self.dir {
            // The directory itself or anything below it: some prefix ending at a `/`.
            return rel
                .iter()
                .enumerate()
                .filter(|(_, b)| **b == b'/')
                .map(|(i, _)| &rel[..i])
                .any(|prefix| self.matches_whole(prefix));
        }
        if self.basename {
            let last = rel.rsplit(|b| *b == b'/').next().unwrap_or(rel);
            return wildmatch(&self.pattern, last);
        }
        wildmatch(&self.pattern, rel)
    }

    /// For directory globs: `prefix` is a directory path; matched whole (or, for a pattern
    /// without `/`, as its last component).
    fn matches_whole(&self, prefix: &[u8]) -> bool {
        if self.basename {
            prefix
                .split(|b| *b == b'/')
                .any(|component| wildmatch(&self.pattern, component))
        } else {
            wildmatch(&self.pattern, prefix)
        }
    }
}

/// Glob matching with `*` (not across `/`), `**` (across `/`) and `?` (not `/`), iterative
/// with backtracking (no recursion: bounded stack on any input). On a mismatch the last `*`
/// takes one more byte if that byte is not `/`; otherwise the last `**` does.
fn wildmatch(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0usize, 0usize);
    // Where to resume: (pattern index after the star, subject index it took up to).
    let mut single: Option<(usize, usize)> = None;
    let mut double: Option<(usize, usize)> = None;
    while si < s.len() {
        if let Some(&c) = p.get(pi) {
            if c == b'*' {
                if p.get(pi + 1) == Some(&b'*') {
                    let mut next = pi + 2;
                    // `**/` also matches no directory at all.
                    if p.get(next) == Some(&b'/') {
                        next += 1;
                    }
                    double = Some((next, si));
                    single = None;
                    pi = next;
                } else {
                    single = Some((pi + 1, si));
                    pi += 1;
                }
                continue;
            }
            if (c == b'?' && s[si] != b'/') || (c != b'?' && c == s[si]) {
                pi += 1;
                si += 1;
                continue;
            }
        }
        if let Some((next, taken)) = single.filter(|(_, t)| s[*t] != b'/') {
            single = Some((next, taken + 1));
            pi = next;
            si = taken + 1;
        } else if let Some((next, taken)) = double {
            single = None;
            double = Some((next, taken + 1));
            pi = next;
            si = taken + 1;
        } else {
            return false;
        }
    }
    // Trailing stars match the empty rest.
    while p.get(pi) == Some(&b'*') {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pattern: &str, path: &str) -> bool {
        Glob::parse(pattern)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(path.as_bytes())
    }

    #[test]
    fn globs_match_like_the_docs_say() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.db", "a.db", true),
            ("*.db", "x/y/a.db", true),
            ("*.db", "x/a.db/b", false),
            ("*.db", "a.dbx", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("ads/", "ads/x.bin", true),
            ("ads/", "ads/deep/x.bin", true),
            ("ads/", "adsx/x.bin", false),
            ("ads/", "ads", false),
            ("tmp/", "a/tmp/b", true),
            ("ads/*.log", "ads/x.log", true),
            ("ads/*.log", "ads/sub/x.log", false),
            ("ads/**/*.log", "ads/sub/x.log", true),
            ("ads/**/*.log", "ads/x.log", true),
            ("**/cache/*", "a/b/cache/f", true),
            ("**/cache/*", "cache/f", true),
            ("data/*", "data/f", true),
            ("data/*", "data/d/f", false),
            ("/data/*", "data/f", true),
            ("*", "anything", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
        ];
        for (p, s, want) in cases {
            assert_eq!(m(p, s), *want, "{p} vs {s}");
        }
    }

    #[test]
    fn nonsense_globs_are_refused() {
        for bad in ["", "/", "//", "a\0b"] {
            assert!(Glob::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn many_stars_stay_linear_enough() {
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let s = "a".repeat(5000);
        assert!(!m(p, &s));
    }
}
