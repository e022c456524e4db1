//! Client-side validation of user input, before anything is sent.
//!
//! The backend validates every request again; this module exists so that obvious mistakes get
//! a one-line answer naming the flag, without a round trip, and so that relative paths are
//! resolved against the CLI's working directory, not the daemon's. It must never check the
//! filesystem or the network: whether a share exists or a bucket answers is the backend's call.

use std::path::{Path, PathBuf};

use crate::error::CliError;

/// Longest name the backend accepts for gpeers and gpairs.
pub const MAX_NAME_LEN: usize = 64;

/// A gpeer or gpair name, or a cluster id: `[A-Za-z0-9_.-]{1,64}`.
pub fn name(flag: &'static str, s: &str) -> Result<String, CliError> {
    if s.is_empty() {
        return Err(CliError::usage(flag, "must not be empty"));
    }
    if s.len() > MAX_NAME_LEN {
        return Err(CliError::usage(
            flag,
            format!(
                "{} characters is too long (at most {MAX_NAME_LEN})",
                s.chars().count()
            ),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(CliError::usage(
            flag,
            format!(
                "{} is not allowed in {:?} (use letters, digits, '_', '.', '-')",
                describe_char(c),
                s
            ),
        ));
    }
    Ok(s.to_string())
}

/// An S3 endpoint: `http(s)://host[:port]`, with an optional trailing `/` that is dropped.
/// The scheme is made lowercase; nothing else is rewritten.
pub fn endpoint(s: &str) -> Result<String, CliError> {
    const FLAG: &str = "--endpoint";
    let (scheme, rest) = s.split_once("://").ok_or_else(|| {
        CliError::usage(FLAG, format!("{s:?} must look like http(s)://host[:port]"))
    })?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return Err(CliError::usage(
            FLAG,
            format!("scheme {scheme:?} is not supported (use http:// or https://)"),
        ));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(CliError::usage(FLAG, format!("{s:?} has no host")));
    }
    if let Some(c) = authority
        .chars()
        .find(|c| matches!(c, '/' | '?' | '#' | '@'))
    {
        let what = match c {
            '@' => "credentials",
            '/' => "a path",
            _ => "a query or fragment",
        };
        return Err(CliError::usage(
            FLAG,
            format!("{s:?} has {what}; give only http(s)://host[:port] (keys go in --access-key/--secret-key, buckets in `gpair bind --remote`)"),
        ));
    }
    let (host, port) = split_host_port(authority).map_err(|p| CliError::usage(FLAG, p))?;
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(p) if p > 0 && port.chars().all(|c| c.is_ascii_digit()) => {}
            _ => {
                return Err(CliError::usage(
                    FLAG,
                    format!("port {port:?} is not a number from 1 to 65535"),
                ))
            }
        }
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if v6.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(CliError::usage(
                FLAG,
                format!("{host:?} is not an IPv6 address"),
            ));
        }
    } else if host.is_empty()
        || host.len() > 253
        || !host.split('.').all(|label| {
            !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
    {
        return Err(CliError::usage(
            FLAG,
            format!("{host:?} is not a valid host name"),
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if authority.starts_with('[') {
        let end = authority
            .find(']')
            .ok_or_else(|| format!("{authority:?}: unterminated IPv6 address"))?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(format!(
                    "{authority:?}: unexpected text after the IPv6 address"
                )),
            },
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => Ok((host, Some(port))),
            None => Ok((authority, None)),
        }
    }
}

/// An access key or region: non-empty, no whitespace or control characters.
pub fn token(flag: &'static str, s: &str) -> Result<String, CliError> {
    if s.is_empty() {
        return Err(CliError::usage(flag, "must not be empty"));
    }
    if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(CliError::usage(
            flag,
            format!("{} is not allowed", describe_char(c)),
        ));
    }
    Ok(s.to_string())
}

/// Where the secret key came from, in the order they are looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// `--secret-key S`.
    Flag(String),
    /// `--secret-key-file FILE` (`-` = standard input): its first line.
    File(PathBuf),
    /// `GPAIR_SECRET_KEY`.
    Env(String),
}

/// Picks the secret key from the flag, the file or the environment (`env` is the value of
/// `GPAIR_SECRET_KEY`, if set), and validates it. `read` reads the file (or stdin for `-`).
pub fn secret_key(
    flag: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    read: impl FnOnce(&Path) -> std::io::Result<String>,
) -> Result<String, CliError> {
    let source = match (flag, file, env) {
        (Some(s), _, _) => SecretSource::Flag(s),
        (None, Some(f), _) => SecretSource::File(f),
        (None, None, Some(e)) => SecretSource::Env(e),
        (None, None, None) => {
            return Err(CliError::usage(
                "--secret-key",
                "missing: give --secret-key, --secret-key-file FILE or set GPAIR_SECRET_KEY",
            ))
        }
    };
    let (flag, raw) = match source {
        SecretSource::Flag(s) => ("--secret-key", s),
        SecretSource::Env(s) => ("GPAIR_SECRET_KEY", s),
        SecretSource::File(path) => {
            let text = read(&path).map_err(|e| {
                CliError::usage(
                    "--secret-key-file",
                    format!(
                        "cannot read {}: {}",
                        path.display(),
                        crate::error::one_line(&e.to_string())
                    ),
                )
            })?;
            let first = text.lines().next().unwrap_or("").to_string();
            ("--secret-key-file", first)
        }
    };
    if raw.is_empty() {
        return Err(CliError::usage(flag, "the secret key is empty"));
    }
    // S3 secret keys are printable ASCII; this also catches a non-UTF-8 GPAIR_SECRET_KEY,
    // which arrives here with U+FFFD in it.
    if !raw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(CliError::usage(
            flag,
            "the secret key must be printable ASCII without spaces",
        ));
    }
    Ok(raw)
}

/// The `--local` share path, made absolute against `cwd` without touching the filesystem
/// (no symlinks resolved, `.` components dropped, trailing `/` dropped).
pub fn local_path(p: &Path, cwd: &Path) -> Result<String, CliError> {
    const FLAG: &str = "--local";
    if p.as_os_str().is_empty() {
        return Err(CliError::usage(FLAG, "must not be empty"));
    }
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let clean: PathBuf = joined.components().collect();
    if !clean.is_absolute() {
        return Err(CliError::usage(
            FLAG,
            "relative path, and the current directory is unknown: give an absolute path",
        ));
    }
    clean.to_str().map(str::to_string).ok_or_else(|| {
        CliError::usage(
            FLAG,
            format!(
                "{} is not valid UTF-8, which the backend API cannot carry",
                clean.display()
            ),
        )
    })
}

/// The `PATH...` arguments of `migrate`, `recall` and `state`, as the raw bytes the backend
/// takes. Each is made absolute against `cwd` lexically, as [`std::path::absolute`] does:
/// `.` components and repeated `/` are dropped, while `..`, a trailing `/` and symlinks are
/// left for the backend to resolve on the east filesystem. Names need not be UTF-8.
pub fn east_paths<P: AsRef<Path>>(paths: &[P], cwd: &Path) -> Result<Vec<Vec<u8>>, CliError> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    const FLAG: &str = "PATH";
    let mut out = Vec::with_capacity(paths.len());
    for (i, p) in paths.iter().enumerate() {
        let p = p.as_ref();
        if p.as_os_str().is_empty() {
            return Err(CliError::usage(
                FLAG,
                format!("path number {} is empty", i + 1),
            ));
        }
        let joined = if p.is_absolute() {
            p.to_path_buf()
        } else if cwd.is_absolute() {
            cwd.join(p)
        } else {
            return Err(CliError::usage(
                FLAG,
                format!(
                    "{} is relative, and the current directory is unknown: give an absolute path",
                    crate::format::path(p.as_os_str().as_bytes())
                ),
            ));
        };
        // `joined` is absolute, so this is purely lexical and never consults the process's
        // own working directory.
        let abs = std::path::absolute(&joined).map_err(|e| {
            CliError::usage(
                FLAG,
                format!(
                    "{}: {}",
                    crate::format::path(joined.as_os_str().as_bytes()),
                    crate::error::one_line(&e.to_string())
                ),
            )
        })?;
        out.push(abs.into_os_string().into_vec());
    }
    Ok(out)
}

/// A job id as `gpair job ls` shows it: a positive whole number.
pub fn job_id(s: &str) -> Result<u64, CliError> {
    const FLAG: &str = "ID";
    let bad = || {
        CliError::usage(
            FLAG,
            format!("{s:?} is not a job id (a number, as `gpair job ls` shows)"),
        )
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u64>() {
        Ok(0) => Err(CliError::usage(FLAG, "job ids start at 1")),
        Ok(id) => Ok(id),
        Err(_) => Err(bad()),
    }
}

/// A duration for `--every`: a whole number with `s`, `m`, `h` or `d` (`90s`, `15m`, `6h`,
/// `1d`), at least one second.
pub fn duration_secs(flag: &'static str, s: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::usage(
            flag,
            format!("{s:?} is not a duration: use a whole number with s, m, h or d (15m, 6h, 1d)"),
        )
    };
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(bad()),
        Some(v) => Ok(v),
    }
}

/// A quota size for `--max-bytes`: bytes, or a whole number with `K`, `M`, `G`, `T` or
/// `KiB`, `MiB`, `GiB`, `TiB` (powers of 1024, any case, optional `B` for bytes); `none` or
/// `0` means no limit, which is sent as `0`.
pub fn size_limit(flag: &'static str, s: &str) -> Result<u64, CliError> {
    const UNITS: &str = "use bytes or a whole number with K, M, G, T (or KiB, MiB, GiB, TiB), \
                         or none for no limit";
    let t = s.trim();
    if t.is_empty() {
        return Err(CliError::usage(
            flag,
            format!("must not be empty ({UNITS})"),
        ));
    }
    if t.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(CliError::usage(
            flag,
            format!("{s:?} is not a size ({UNITS})"),
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(CliError::usage(
            flag,
            format!("{s:?}: use a whole number, e.g. 1536M rather than 1.5G"),
        ));
    }
    let unit = unit.trim_start();
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "kb" | "mb" | "gb" | "tb" => {
            return Err(CliError::usage(flag, {
                let letter = unit.get(..1).unwrap_or("").to_ascii_uppercase();
                format!(
                    "{s:?}: sizes are powers of 1024; write {digits}{letter} or \
                         {digits}{letter}iB"
                )
            }))
        }
        _ => {
            return Err(CliError::usage(
                flag,
                format!("{s:?} has an unknown unit {unit:?} ({UNITS})"),
            ))
        }
    };
    let too_large = || CliError::usage(flag, format!("{s:?} is too large (at most 16 EiB)"));
    let n = digits.parse::<u64>().map_err(|_| too_large())?;
    n.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// A quota file count for `--max-files`: a whole number; `none` or `0` means no limit.
pub fn count_limit(flag: &'static str, s: &str) -> Result<u64, CliError> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("none") {
        return Ok(0);
    }
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CliError::usage(
            flag,
            format!("{s:?} is not a number of files (a whole number, or none for no limit)"),
        ));
    }
    t.parse::<u64>()
        .map_err(|_| CliError::usage(flag, format!("{s:?} is too large")))
}

/// `BUCKET[/PREFIX]` for `--remote`: the bucket follows the S3 naming rules; the prefix is
/// made of non-empty segments other than `.` and `..`. Returns `bucket` or `bucket/prefix`
/// with leading and trailing slashes of the prefix dropped.
pub fn remote(s: &str) -> Result<String, CliError> {
    const FLAG: &str = "--remote";
    let (bucket, prefix) = match s.split_once('/') {
        Some((b, p)) => (b, p.trim_matches('/')),
        None => (s, ""),
    };
    bucket_name(bucket).map_err(|p| CliError::usage(FLAG, p))?;
    if prefix.is_empty() {
        return Ok(bucket.to_string());
    }
    for seg in prefix.split('/') {
        if seg.is_empty() {
            return Err(CliError::usage(
                FLAG,
                format!("prefix {prefix:?} has an empty segment (\"//\")"),
            ));
        }
        if seg == "." || seg == ".." {
            return Err(CliError::usage(
                FLAG,
                format!("prefix {prefix:?} has a {seg:?} segment"),
            ));
        }
        if let Some(c) = seg.chars().find(|c| c.is_control() || *c == '\\') {
            return Err(CliError::usage(
                FLAG,
                format!("{} is not allowed in the prefix", describe_char(c)),
            ));
        }
    }
    if prefix.len() > 512 {
        return Err(CliError::usage(FLAG, "the prefix is longer than 512 bytes"));
    }
    Ok(format!("{bucket}/{prefix}"))
}

/// The S3 bucket naming rules (3–63 of `a-z 0-9 . -`, starting and ending with a letter or
/// digit, no `..`, not an IP address), the same the gateway applies.
fn bucket_name(b: &str) -> Result<(), String> {
    if b.is_empty() {
        return Err("the bucket name is missing (BUCKET or BUCKET/PREFIX)".to_string());
    }
    let bad = |why: &str| Err(format!("bucket {b:?} {why}"));
    if !(3..=63).contains(&b.len()) {
        return bad("must be 3 to 63 characters long");
    }
    if !b
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
    {
        return bad("may only contain lowercase letters, digits, '.' and '-'");
    }
    let edge_ok = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !edge_ok(b.bytes().next()) || !edge_ok(b.bytes().last()) {
        return bad("must start and end with a letter or digit");
    }
    if b.contains("..") {
        return bad("must not contain \"..\"");
    }
    if b.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("must not look like an IP address");
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() {
        format!("character {:?}", c)
    } else {
        format!("'{c}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(r: Result<String, CliError>) -> String {
        match r {
            Err(e) => e.to_string(),
            Ok(v) => panic!("expected an error, got {v:?}"),
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            name("NAME", "west-1_a.b").ok().as_deref(),
            Some("west-1_a.b")
        );
        assert!(name("NAME", &"a".repeat(64)).is_ok());
        assert!(problem(name("NAME", &"a".repeat(65))).contains("too long"));
        assert_eq!(problem(name("NAME", "")), "NAME: must not be empty");
        assert_eq!(
            problem(name("NAME", "a b")),
            "NAME: character ' ' is not allowed in \"a b\" (use letters, digits, '_', '.', '-')"
        );
        assert!(problem(name("--gpeer", "a/b")).starts_with("--gpeer: '/' is not allowed"));
        assert!(name("NAME", "é").is_err());
        assert!(name("NAME", "a,b").is_err());
    }

    #[test]
    fn endpoints() {
        let ok = |s: &str| endpoint(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("http://127.0.0.1:9000"), "http://127.0.0.1:9000");
        assert_eq!(ok("https://s3.example.com/"), "https://s3.example.com");
        assert_eq!(ok("HTTP://minio:9000"), "http://minio:9000");
        assert_eq!(ok("http://[::1]:9000"), "http://[::1]:9000");
        assert_eq!(ok("http://[::1]"), "http://[::1]");

        assert!(problem(endpoint("127.0.0.1:9000")).starts_with("--endpoint: "));
        assert!(problem(endpoint("ftp://x")).contains("not supported"));
        assert!(problem(endpoint("http://")).contains("no host"));
        assert!(problem(endpoint("http://x/bucket")).contains("a path"));
        assert!(problem(endpoint("http://k:s@x")).contains("credentials"));
        assert!(problem(endpoint("http://x?a=b")).contains("query"));
        assert!(problem(endpoint("http://x:0")).contains("port"));
        assert!(problem(endpoint("http://x:65536")).contains("port"));
        assert!(problem(endpoint("http://x:+80")).contains("port"));
        assert!(problem(endpoint("http://x:")).contains("port"));
        assert!(problem(endpoint("http://a..b")).contains("host"));
        assert!(problem(endpoint("http://a_b")).contains("host"));
        assert!(problem(endpoint("http://[zz]:1")).contains("IPv6"));
        assert!(problem(endpoint("http://[::1]x")).contains("after the IPv6"));
    }

    #[test]
    fn tokens() {
        assert!(token("--access-key", "AKIA123").is_ok());
        assert_eq!(
            problem(token("--access-key", "")),
            "--access-key: must not be empty"
        );
        assert!(problem(token("--region", "us east")).contains("not allowed"));
    }

    #[test]
    fn secret_key_sources_in_order() {
        let no_file = |_: &Path| -> std::io::Result<String> { unreachable!() };
        assert_eq!(
            secret_key(Some("flag".into()), None, Some("env".into()), no_file)
                .ok()
                .as_deref(),
            Some("flag")
        );
        assert_eq!(
            secret_key(None, None, Some("env".into()), no_file)
                .ok()
                .as_deref(),
            Some("env")
        );
        let file = |p: &Path| {
            assert_eq!(p, Path::new("/k"));
            Ok("from-file\nignored\n".to_string())
        };
        assert_eq!(
            secret_key(None, Some("/k".into()), Some("env".into()), file)
                .ok()
                .as_deref(),
            Some("from-file")
        );
        assert!(problem(secret_key(None, None, None, no_file)).contains("GPAIR_SECRET_KEY"));
        assert_eq!(
            problem(secret_key(None, None, Some(String::new()), no_file)),
            "GPAIR_SECRET_KEY: the secret key is empty"
        );
        let missing = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        assert!(
            problem(secret_key(None, Some("/nope".into()), None, missing))
                .starts_with("--secret-key-file: cannot read /nope: ")
        );
        let empty = |_: &Path| Ok("\n".to_string());
        assert!(problem(secret_key(None, Some("/k".into()), None, empty)).contains("empty"));
        assert!(
            problem(secret_key(Some("a\tb".into()), None, None, no_file))
                .contains("printable ASCII")
        );
        assert!(
            problem(secret_key(None, None, Some("\u{fffd}".into()), no_file))
                .contains("printable ASCII")
        );
    }

    #[test]
    fn local_paths_are_made_absolute_lexically() {
        let cwd = Path::new("/home/op");
        assert_eq!(
            local_path(Path::new("data"), cwd).ok().as_deref(),
            Some("/home/op/data")
        );
        assert_eq!(
            local_path(Path::new("./data/"), cwd).ok().as_deref(),
            Some("/home/op/data")
        );
        assert_eq!(
            local_path(Path::new("/srv//share/."), cwd).ok().as_deref(),
            Some("/srv/share")
        );
        // `..` is kept: whether it crosses a symlink is for the backend to resolve.
        assert_eq!(
            local_path(Path::new("../x"), cwd).ok().as_deref(),
            Some("/home/op/../x")
        );
        assert_eq!(
            problem(local_path(Path::new(""), cwd)),
            "--local: must not be empty"
        );
        assert!(
            problem(local_path(Path::new("x"), Path::new(""))).contains("give an absolute path")
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_local_path_is_refused() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/a/\xff"));
        assert!(problem(local_path(p, Path::new("/"))).contains("not valid UTF-8"));
    }

    #[test]
    fn east_paths_are_made_absolute_lexically_as_raw_bytes() {
        use std::os::unix::ffi::OsStrExt;
        let cwd = Path::new("/home/op");
        let p = |s: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(s));
        let got = east_paths(
            &[
                p(b"data"),
                p(b"./d/./f"),
                p(b"/srv//share/."),
                p(b"../x"),
                p(b"dir/"),
                p(b"caf\xe9 \xff"),
                p(b"//net/x"),
            ],
            cwd,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<&[u8]> = vec![
            b"/home/op/data",
            b"/home/op/d/f",
            b"/srv/share",
            // `..`, a trailing `/` and symlinks are the backend's to resolve on east.
            b"/home/op/../x",
            b"/home/op/dir/",
            b"/home/op/caf\xe9 \xff",
            // POSIX leaves a leading `//` implementation-defined, so it is kept.
            b"//net/x",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn east_path_errors() {
        let cwd = Path::new("/");
        let e = east_paths(&[PathBuf::from("a"), PathBuf::new()], cwd)
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("PATH: path number 2 is empty"));
        let e = east_paths(&[PathBuf::from("rel")], Path::new(""))
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e
                == "PATH: rel is relative, and the current directory is unknown: give an absolute path"),
            "{e:?}"
        );
        assert_eq!(
            east_paths(&[PathBuf::from("/abs")], Path::new("")).ok(),
            Some(vec![b"/abs".to_vec()])
        );
    }

    #[test]
    fn job_ids() {
        assert_eq!(job_id("17").ok(), Some(17));
        assert_eq!(job_id("0017").ok(), Some(17));
        assert_eq!(job_id(&u64::MAX.to_string()).ok(), Some(u64::MAX));
        assert_eq!(
            job_id("0").err().map(|e| e.to_string()).as_deref(),
            Some("ID: job ids start at 1")
        );
        for bad in ["", "x", "-1", "+1", "1.0", " 1", "18446744073709551616"] {
            let e = job_id(bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.starts_with("ID: ")
                    && e.ends_with("is not a job id (a number, as `gpair job ls` shows)")),
                "{bad:?}: {e:?}"
            );
        }
    }

    #[test]
    fn size_limits() {
        let ok = |s: &str| size_limit("--max-bytes", s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("0"), 0);
        assert_eq!(ok("none"), 0);
        assert_eq!(ok("NONE"), 0);
        assert_eq!(ok("1234"), 1234);
        assert_eq!(ok("1234B"), 1234);
        assert_eq!(ok("10K"), 10 << 10);
        assert_eq!(ok("10k"), 10 << 10);
        assert_eq!(ok("3M"), 3 << 20);
        assert_eq!(ok("3MiB"), 3 << 20);
        assert_eq!(ok("10G"), 10 << 30);
        assert_eq!(ok("10 GiB"), 10 << 30);
        assert_eq!(ok(" 2gib "), 2 << 30);
        assert_eq!(ok("1T"), 1 << 40);
        assert_eq!(ok("16777215TiB"), 16_777_215 << 40);
        assert_eq!(ok("18446744073709551615"), u64::MAX);

        let problem = |s: &str| match size_limit("--max-bytes", s) {
            Err(e) => e.to_string(),
            Ok(v) => panic!("{s:?} gave {v}"),
        };
        assert!(problem("").starts_with("--max-bytes: must not be empty"));
        assert!(problem("G").contains("is not a size"));
        assert!(problem("-1").contains("is not a size"));
        assert!(problem("lots").contains("is not a size"));
        assert_eq!(
            problem("1.5G"),
            "--max-bytes: \"1.5G\": use a whole number, e.g. 1536M rather than 1.5G"
        );
        assert_eq!(
            problem("10 GB"),
            "--max-bytes: \"10 GB\": sizes are powers of 1024; write 10G or 10GiB"
        );
        assert!(problem("10P").contains("unknown unit \"P\""));
        assert!(problem("10Gx").contains("unknown unit"));
        assert!(problem("16777216T").contains("too large"));
        assert!(problem("99999999999999999999").contains("too large"));
    }

    #[test]
    fn count_limits() {
        assert_eq!(count_limit("--max-files", "none").ok(), Some(0));
        assert_eq!(count_limit("--max-files", "0").ok(), Some(0));
        assert_eq!(count_limit("--max-files", "5000").ok(), Some(5000));
        for bad in ["", "1k", "-3", "1e6", "1_000"] {
            let e = count_limit("--max-files", bad).err().map(|e| e.to_string());
            assert!(
                e.as_deref().is_some_and(|e| e.starts_with("--max-files: ")
                    && e.ends_with(
                        "is not a number of files (a whole number, or none for no limit)"
                    )),
                "{bad:?}: {e:?}"
            );
        }
        assert!(count_limit("--max-files", "99999999999999999999")
            .err()
            .is_some_and(|e| e.to_string().ends_with("is too large")));
    }

    #[test]
    fn remotes() {
        let ok = |s: &str| remote(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(ok("bucket"), "bucket");
        assert_eq!(ok("bucket/"), "bucket");
        assert_eq!(ok("my.bucket-1/a/b/"), "my.bucket-1/a/b");
        assert_eq!(ok("bkt//a"), "bkt/a");

        assert!(problem(remote("")).contains("bucket name is missing"));
        assert!(problem(remote("/x")).contains("bucket name is missing"));
        assert!(problem(remote("ab")).contains("3 to 63"));
        assert!(problem(remote("Bucket")).contains("lowercase"));
        assert!(problem(remote("-bucket")).contains("start and end"));
        assert!(problem(remote("a..b")).contains(".."));
        assert!(problem(remote("10.0.0.1")).contains("IP address"));
        assert!(problem(remote("bkt/a//b")).contains("empty segment"));
        assert!(problem(remote("bkt/a/../b")).contains("\"..\" segment"));
        assert!(problem(remote("bkt/a\\b")).contains("not allowed"));
    }

    #[test]
    fn durations() {
        assert_eq!(duration_secs("--every", "90s").ok(), Some(90));
        assert_eq!(duration_secs("--every", "15m").ok(), Some(900));
        assert_eq!(duration_secs("--every", "6h").ok(), Some(21_600));
        assert_eq!(duration_secs("--every", "1d").ok(), Some(86_400));
        for bad in [
            "",
            "0s",
            "15",
            "m",
            "1.5h",
            "3w",
            "-1h",
            "99999999999999999999d",
        ] {
            assert!(duration_secs("--every", bad).is_err(), "{bad:?}");
        }
    }
}
