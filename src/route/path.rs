//! The path a request is routed on, which is also the path its backend
//! receives, so that a backend can never read a different path than the
//! one Switchyard routed.
//!
//! Normalising does two things, as RFC 3986 section 6.2.2 describes, and
//! nothing else: it decodes percent-encoded unreserved characters (`%61`
//! is `a`, `%2e` is `.`), and then removes dot segments (`/a/./b/../c` is
//! `/a/c`). Other escapes stay as they are, `%2F` and `%5C` included, and
//! empty segments (`//`) are kept. A path whose dot segments would climb
//! above the root, or that holds a NUL (raw or `%00`) or a backslash, is
//! refused: backends disagree on what those mean.

use std::borrow::Cow;

/// Why a request path is refused (with `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// `..` segments climb above the root: `/../etc/passwd`.
    EscapesRoot,
    /// A NUL byte, raw or as `%00`.
    Nul,
    /// A raw backslash, which some servers read as `/`.
    Backslash,
}

impl PathError {
    pub fn why(self) -> &'static str {
        match self {
            PathError::EscapesRoot => "the path climbs above the root with `..`",
            PathError::Nul => "the path holds a NUL",
            PathError::Backslash => "the path holds a backslash",
        }
    }
}

/// `path` (the request target's path, without its query) as routed and
/// forwarded. Borrows it when there is nothing to change, which is the
/// common case: no `%`, no dot segment, no backslash or NUL. `*` (the
/// target of `OPTIONS *`) and any path not starting with `/` pass as they
/// are.
pub fn normalise(path: &str) -> Result<Cow<'_, str>, PathError> {
    let Scan { escapes, dots } = scan(path)?;
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = if escapes {
        Cow::Owned(decode_unreserved(path)?)
    } else {
        Cow::Borrowed(path)
    };
    // Decoding can make dot segments (`%2e%2e`); only then look again.
    if !(dots || escapes && has_dot_segment(&decoded)) {
        return Ok(decoded);
    }
    remove_dot_segments(&decoded).map(Cow::Owned)
}

/// What one pass over a path finds.
struct Scan {
    /// A `%`.
    escapes: bool,
    /// A `.` or `..` segment.
    dots: bool,
}

/// One pass over `path`: refuses a backslash or a NUL, and notes escapes
/// and dot segments, so that the common path is only read once.
fn scan(path: &str) -> Result<Scan, PathError> {
    let mut found = Scan {
        escapes: false,
        dots: false,
    };
    // Dots seen since the last `/`, while the segment is nothing else.
    let mut run: Option<u8> = None;
    for &b in path.as_bytes() {
        match b {
            b'\\' => return Err(PathError::Backslash),
            0 => return Err(PathError::Nul),
            b'/' => {
                found.dots |= matches!(run, Some(1 | 2));
                run = Some(0);
                continue;
            }
            b'%' => found.escapes = true,
            _ => {}
        }
        run = match (run, b) {
            (Some(n), b'.') => Some(n.saturating_add(1)),
            _ => None,
        };
    }
    found.dots |= matches!(run, Some(1 | 2));
    Ok(found)
}

/// Decodes each `%XX` whose byte is unreserved (letters, digits, `-`, `.`,
/// `_`, `~`); keeps every other escape as written.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((hi, lo)) => {
                let byte = hi << 4 | lo;
                if byte == 0 {
                    return Err(PathError::Nul);
                }
                if is_unreserved(byte) {
                    out.push(byte as char);
                } else {
                    out.push_str(&path[i..i + 3]);
                }
                i += 3;
            }
            None => {
                // Whole characters: the path is a `str`, and only ASCII
                // bytes start the escapes handled above.
                let len = utf8_len(bytes[i]);
                out.push_str(&path[i..i + len]);
                i += len;
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986's unreserved characters.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Whether some segment of `path` is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|s| s == "." || s == "..")
}

/// RFC 3986 section 5.2.4 for an absolute path, except that climbing
/// above the root is an error rather than clamped.
fn remove_dot_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    // A path ending in a dot segment names a directory: `/a/b/..` is `/a/`.
    let mut directory = false;
    for segment in path[1..].split('/') {
        match segment {
            "." => directory = true,
            ".." => {
                kept.pop().ok_or(PathError::EscapesRoot)?;
                directory = true;
            }
            s => {
                kept.push(s);
                directory = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if directory || kept.is_empty() {
        out.push('/');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, PathError> {
        normalise(p).map(Cow::into_owned)
    }

    #[test]
    fn ordinary_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/api",
            "/api/users/7",
            "/a//b/",
            "/a.b/c..d/.e",
            "*",
            "/~x-y_z",
        ] {
            assert!(
                matches!(normalise(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn dot_segments_go_and_nothing_else_merges() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/.", "/"),
            ("/a/..", "/"),
            ("/a//../b", "/a/b"),
            ("//a/../b", "//b"),
            ("/a/b/../../c/", "/c/"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_the_rest_kept() {
        let cases = [
            ("/%61pi", "/api"),
            ("/%7Euser/%2D%2e%5F", "/~user/-._"),
            ("/a%2Fb", "/a%2Fb"),
            ("/a%2fb", "/a%2fb"),
            ("/a%5Cb", "/a%5Cb"),
            ("/caf%C3%A9", "/caf%C3%A9"),
            ("/100%", "/100%"),
            ("/%zz/%4", "/%zz/%4"),
            ("/é/%41", "/é/A"),
        ];
        for (raw, want) in cases {
            assert_eq!(norm(raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn encoded_dots_are_dot_segments_too() {
        assert_eq!(norm("/public/%2e%2e/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/public/.%2E/admin").as_deref(), Ok("/admin"));
        assert_eq!(norm("/a/%2e/b").as_deref(), Ok("/a/b"));
        // An encoded slash is not a separator: no dot segment here.
        assert_eq!(norm("/a/..%2Fadmin").as_deref(), Ok("/a/..%2Fadmin"));
    }

    #[test]
    fn climbing_above_the_root_nul_and_backslash_are_refused() {
        assert_eq!(norm("/../x"), Err(PathError::EscapesRoot));
        assert_eq!(norm("/a/../../x"), Err(PathError::EscapesRoot));
        assert_eq!(norm("/%2e%2e/x"), Err(PathError::EscapesRoot));
        assert_eq!(norm("/a\\b"), Err(PathError::Backslash));
        assert_eq!(norm("/a%00b"), Err(PathError::Nul));
        assert_eq!(norm("/a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn normalising_twice_changes_nothing_more() {
        for p in ["/a/%2e%2e/b/./c", "/%61/%2F/..", "/x/%252e%252e/y"] {
            let once = norm(p).unwrap();
            assert_eq!(norm(&once).unwrap(), once, "{p}");
        }
    }

    /// The reference: always decode, always remove dot segments.
    fn slow(p: &str) -> Result<String, PathError> {
        if p.contains('\\') {
            return Err(PathError::Backslash);
        }
        if p.contains('\0') {
            return Err(PathError::Nul);
        }
        if !p.starts_with('/') {
            return Ok(p.to_string());
        }
        let decoded = decode_unreserved(p)?;
        if has_dot_segment(&decoded) {
            remove_dot_segments(&decoded)
        } else {
            Ok(decoded)
        }
    }

    proptest::proptest! {
        /// The one-pass shortcut gives what always doing everything gives,
        /// and a normalised path stays as it is.
        #[test]
        fn the_shortcut_agrees_with_the_reference_and_is_stable(
            parts in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", ".", "..", "%2e", "%2E", "%2F", "%41", "%00", "%", "a", "b.c", "~", "\\", "%5C",
                ]),
                0..12,
            )
        ) {
            let p = format!("/{}", parts.concat());
            proptest::prop_assert_eq!(norm(&p), slow(&p), "{}", p);
            if let Ok(once) = norm(&p) {
                proptest::prop_assert_eq!(norm(&once), Ok(once.clone()), "{}", p);
            }
        }
    }
}
