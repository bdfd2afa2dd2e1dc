//! Names that become path segments in the store (`{platform}/{version}/{filename}`), URL path
//! parameters and file names. One definition, used by the CRD's CEL rules (server-side, before an
//! object is stored) and by every Rust code path that turns a name into a path (before any I/O).

use std::fmt;

/// Longest name accepted for a platform, version, file name, serial number or file key.
pub const MAX_SEGMENT_LEN: usize = 128;

/// Characters a segment may contain. Deliberately a whitelist: no `/`, `\`, NUL, control
/// characters, whitespace or shell metacharacters can reach a path or a script.
pub const SEGMENT_CHARSET: &str = "A-Za-z0-9._+~@=,-";

/// The same rule as [`validate_segment`] as a regular expression (plus "no `..`").
pub(crate) const SEGMENT_REGEX: &str = "^[A-Za-z0-9_+~@=,-][A-Za-z0-9._+~@=,-]*$";

/// The same rule as [`validate_segment`] as one JSON Schema / ECMA-262 `pattern` (with
/// `maxLength` [`MAX_SEGMENT_LEN`]): allowed characters only, not starting with `.`, never two
/// dots in a row. The OpenAPI document states it for every path segment the server checks (a
/// literal there, kept equal to this one by a test in `serve::openapi`).
pub const SEGMENT_PATTERN: &str = r"^[A-Za-z0-9_+~@=,-](\.?[A-Za-z0-9_+~@=,-])*\.?$";

fn segment_cel(var: &str) -> String {
    format!("{var}.size() <= {MAX_SEGMENT_LEN} && {var}.matches('{SEGMENT_REGEX}') && !{var}.contains('..')")
}

fn segment_message(what: &str) -> String {
    format!(
        "{what} must be a safe path segment: 1 to {MAX_SEGMENT_LEN} characters from A-Z a-z 0-9 . _ + ~ @ = , -, \
         not starting with '.', and without '..'"
    )
}

/// CEL rule (`x-kubernetes-validations`) for one string field: the same rule as
/// [`validate_segment`], enforced by the apiserver before the object is stored.
pub fn segment_rule(what: &str) -> kube::core::Rule {
    kube::core::Rule::new(segment_cel("self")).message(kube::core::Message::Message(segment_message(what)))
}

/// CEL rule (`x-kubernetes-validations`) refusing the [`RESERVED_NAMES`] in any letter case, for
/// one string field that becomes a path segment in the store. A second rule beside
/// [`segment_rule`] (a pattern cannot say "not these words" in RE2): cheap, one `lowerAscii` on a
/// string of at most [`MAX_SEGMENT_LEN`] characters.
pub fn reserved_rule(what: &str) -> kube::core::Rule {
    let names = RESERVED_NAMES.map(|n| format!("'{n}'")).join(", ");
    kube::core::Rule::new(format!("!(self.lowerAscii() in [{names}])")).message(kube::core::Message::Message(
        format!(
            "{what} is reserved for the store's own use (in any letter case: {})",
            RESERVED_NAMES.join(", ")
        ),
    ))
}

/// CEL rule for a list of strings, or the keys of a map: each must be a safe segment.
pub fn each_segment_rule(what: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(x, {})", segment_cel("x")))
        .message(kube::core::Message::Message(segment_message(what)))
}

/// CEL rule for the values of a map of strings: each must be a safe segment.
pub fn each_value_segment_rule(what: &str) -> kube::core::Rule {
    kube::core::Rule::new(format!("self.all(k, {})", segment_cel("self[k]")))
        .message(kube::core::Message::Message(segment_message(what)))
}

/// Names the store uses for itself at its top level, refused as any path segment in any letter
/// case (a file system may not tell `Manifest.JSON` from `manifest.json`): the manifest, the
/// temporary and status directories, the manifest lock and the device snapshots' platform.
pub const RESERVED_NAMES: [&str; 5] = ["manifest.json", ".tmp", ".status", ".manifest.lock", "ztp-snapshots"];

/// The platform the store keeps device snapshots under (reserved: only the store itself writes
/// there, through [`ImagePath::internal`]).
pub const SNAPSHOT_PLATFORM: &str = "ztp-snapshots";

/// Whether `name` is one of [`RESERVED_NAMES`], in any letter case.
pub fn is_reserved(name: &str) -> bool {
    RESERVED_NAMES.iter().any(|r| r.eq_ignore_ascii_case(name))
}

/// Why a name is not a safe path segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is {len} characters long; at most {MAX_SEGMENT_LEN} are allowed")]
    TooLong { what: &'static str, len: usize },
    #[error("{what} {name:?} contains {ch:?}; allowed are {SEGMENT_CHARSET}")]
    BadChar { what: &'static str, name: String, ch: char },
    #[error("{what} {name:?} starts with '.'; names starting with a dot are reserved")]
    LeadingDot { what: &'static str, name: String },
    #[error("{what} {name:?} contains '..'")]
    DotDot { what: &'static str, name: String },
    #[error(
        "{what} {name:?} is reserved for the store's own use (reserved in any letter case: manifest.json, .tmp, .status, .manifest.lock, ztp-snapshots)"
    )]
    Reserved { what: &'static str, name: String },
}

fn allowed(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '+' | '~' | '@' | '=' | ',' | '-')
}

/// The length part of [`validate_segment`]: at most [`MAX_SEGMENT_LEN`] characters. Also the
/// bound on every identity header a device sends (serial number, model, version…: see
/// `profile::identity::check_identity_headers`), so no value a device names itself by is longer
/// than a serial number in a path may be.
pub fn validate_length(what: &'static str, value: &str) -> Result<(), SegmentError> {
    // No more bytes than that: no more characters either (counting them is the slow part).
    if value.len() <= MAX_SEGMENT_LEN {
        return Ok(());
    }
    let len = value.chars().count();
    if len > MAX_SEGMENT_LEN {
        return Err(SegmentError::TooLong { what, len });
    }
    Ok(())
}

/// Checks that `name` can be used as one path segment. `what` names the field in the error
/// ("platform", "filename", …) so the message tells the user what to fix.
pub fn validate_segment(what: &'static str, name: &str) -> Result<(), SegmentError> {
    if name.is_empty() {
        return Err(SegmentError::Empty { what });
    }
    validate_length(what, name)?;
    // Bytes first (every allowed character is ASCII); the character only for the error.
    if !name.bytes().all(|b| allowed(char::from(b)))
        && let Some(ch) = name.chars().find(|c| !allowed(*c))
    {
        return Err(SegmentError::BadChar { what, name: name.to_owned(), ch });
    }
    if name.starts_with('.') {
        return Err(SegmentError::LeadingDot { what, name: name.to_owned() });
    }
    if name.as_bytes().windows(2).any(|pair| pair == b"..") {
        return Err(SegmentError::DotDot { what, name: name.to_owned() });
    }
    if is_reserved(name) {
        return Err(SegmentError::Reserved { what, name: name.to_owned() });
    }
    Ok(())
}

/// A validated `{platform}/{version}/{filename}` triple: the only way the store builds a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImagePath {
    platform: String,
    version: String,
    filename: String,
}

impl ImagePath {
    pub fn new(platform: &str, version: &str, filename: &str) -> Result<Self, SegmentError> {
        validate_segment("platform", platform)?;
        validate_segment("version", version)?;
        validate_segment("filename", filename)?;
        Ok(Self { platform: platform.to_owned(), version: version.to_owned(), filename: filename.to_owned() })
    }

    /// The path of one of the store's own files under a reserved platform (the device snapshots'
    /// `ztp-snapshots`): the version and file name are validated, the platform must be reserved.
    pub fn internal(platform: &'static str, version: &str, filename: &str) -> Result<Self, SegmentError> {
        debug_assert!(is_reserved(platform), "{platform} is not a reserved name");
        validate_segment("version", version)?;
        validate_segment("filename", filename)?;
        Ok(Self { platform: platform.to_owned(), version: version.to_owned(), filename: filename.to_owned() })
    }

    pub fn platform(&self) -> &str {
        &self.platform
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn filename(&self) -> &str {
        &self.filename
    }
}

impl fmt::Display for ImagePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.platform, self.version, self.filename)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_names() {
        for n in [
            "cumulus-linux",
            "5.14.0",
            "cumulus-linux-5.14.0-mlx-amd64.bin",
            "onie-installer-x86_64-accton_as7712_32x-r0.bin",
            "nvos-25.02.2002",
            "MT1234X56789",
            "sonic+debug~1",
        ] {
            assert_eq!(validate_segment("name", n), Ok(()), "{n}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        type Check = fn(&SegmentError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, SegmentError::Empty { .. })),
            ("..", |e| matches!(e, SegmentError::LeadingDot { .. })),
            (".", |e| matches!(e, SegmentError::LeadingDot { .. })),
            (".hidden", |e| matches!(e, SegmentError::LeadingDot { .. })),
            ("a..b", |e| matches!(e, SegmentError::DotDot { .. })),
            ("a/b", |e| matches!(e, SegmentError::BadChar { ch: '/', .. })),
            ("a\\b", |e| matches!(e, SegmentError::BadChar { ch: '\\', .. })),
            ("a\0b", |e| matches!(e, SegmentError::BadChar { ch: '\0', .. })),
            ("a\nb", |e| matches!(e, SegmentError::BadChar { ch: '\n', .. })),
            ("a b", |e| matches!(e, SegmentError::BadChar { ch: ' ', .. })),
            ("%2e%2e", |e| matches!(e, SegmentError::BadChar { ch: '%', .. })),
            ("é", |e| matches!(e, SegmentError::BadChar { .. })),
        ];
        for (name, check) in cases {
            let err = validate_segment("platform", name).expect_err(name);
            assert!(check(&err), "{name:?} gave {err:?}");
            assert!(err.to_string().starts_with("platform"), "{err}");
        }
        let long = "a".repeat(MAX_SEGMENT_LEN + 1);
        assert!(matches!(validate_segment("version", &long), Err(SegmentError::TooLong { len: 129, .. })));
        assert_eq!(validate_segment("version", &"a".repeat(MAX_SEGMENT_LEN)), Ok(()));
    }

    #[test]
    fn the_pattern_is_the_rule() {
        let pattern = regex::Regex::new(SEGMENT_PATTERN).expect("a valid regex");
        let long = "a".repeat(MAX_SEGMENT_LEN);
        for name in [
            "cumulus-linux",
            "5.14.0",
            "a.b.c",
            "a.",
            "x",
            "sonic+debug~1",
            "a@b=c,d",
            "_",
            &long,
            "",
            ".",
            "..",
            ".a",
            "a..b",
            "a/b",
            "a b",
            "a\nb",
            "a\n",
            "é",
            "%2e",
            "a...",
            "a.b..",
        ] {
            // The pattern states the characters; reserved names are refused by the rule alone.
            let by_rule = validate_segment("name", name).is_ok() || is_reserved(name);
            assert_eq!(pattern.is_match(name), by_rule, "{name:?}");
        }
    }

    #[test]
    fn reserved_names_are_refused_in_any_case() {
        for name in ["manifest.json", "MANIFEST.JSON", "Manifest.Json", "ztp-snapshots", "ZTP-Snapshots"] {
            let err = validate_segment("platform", name).expect_err(name);
            assert!(matches!(err, SegmentError::Reserved { .. }), "{name}: {err:?}");
            assert!(err.to_string().contains("reserved"), "{err}");
        }
        for name in [".tmp", ".STATUS", ".manifest.lock"] {
            assert!(validate_segment("version", name).is_err(), "{name}");
        }
        assert_eq!(validate_segment("filename", "manifest.json.bin"), Ok(()));
        assert!(ImagePath::new("manifest.json", "1", "a.bin").is_err());
        assert!(ImagePath::new("lab", "1", "Manifest.json").is_err());
        let snap = ImagePath::internal("ztp-snapshots", "v1", "snapshot.json").expect("internal path");
        assert_eq!(snap.to_string(), "ztp-snapshots/v1/snapshot.json");
    }

    #[test]
    fn image_path_joins_validated_segments() {
        let p = ImagePath::new("nvos", "25.02", "nvos.bin").unwrap();
        assert_eq!(p.to_string(), "nvos/25.02/nvos.bin");
        assert!(ImagePath::new("nvos", "..", "x").is_err());
        assert!(ImagePath::new("nvos", "1", "../../etc/passwd").is_err());
    }
}
