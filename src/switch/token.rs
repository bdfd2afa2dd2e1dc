//! The per-device report token: `HMAC-SHA256(key, serial)` in hex, with a key the controller
//! generates once into a Secret that every server replica mounts. Any replica can check a token,
//! and nothing is stored per device.

use std::{fmt, path::Path};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// Fewest bytes of key material accepted (the generated key is 64 hex digits).
pub const MIN_KEY_LEN: usize = 32;
/// Domain separation: a token is good for reports of this serial and nothing else.
const CONTEXT: &[u8] = b"ztp-operator report token v1\0";

/// The key material, as read from the mounted Secret (its bytes, surrounding white space
/// trimmed).
#[derive(Clone, PartialEq, Eq)]
pub struct ReportKey(Vec<u8>);

/// A key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("read the report key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the report key {path} has {len} bytes; at least {MIN_KEY_LEN} are needed")]
    Short { path: String, len: usize },
    #[error("no random bytes for a new report key: {0}")]
    Random(String),
}

impl fmt::Debug for ReportKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportKey({} bytes, redacted)", self.0.len())
    }
}

impl ReportKey {
    /// A new random key: 32 random bytes as 64 hex digits (the text stored in the Secret).
    pub fn generate() -> Result<Self, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>().into_bytes()))
    }

    /// A key from its stored bytes (trimmed), refused when shorter than [`MIN_KEY_LEN`].
    pub fn from_bytes(what: &str, bytes: &[u8]) -> Result<Self, KeyError> {
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < MIN_KEY_LEN {
            return Err(KeyError::Short { path: what.to_owned(), len: trimmed.len() });
        }
        Ok(Self(trimmed.to_vec()))
    }

    /// The key in a file (a Secret's key mounted into the server).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let what = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| KeyError::Read { path: what.clone(), source })?;
        Self::from_bytes(&what, &bytes)
    }

    /// The stored form of the key (what goes into the Secret).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, serial: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(CONTEXT);
        mac.update(serial.as_bytes());
        mac
    }

    /// The token of a serial: 64 lower-case hex digits.
    pub fn token(&self, serial: &str) -> String {
        self.mac(serial).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is the serial's token (compared in constant time).
    pub fn verify(&self, serial: &str, token: &str) -> bool {
        let Some(bytes) = from_hex(token.trim()) else { return false };
        self.mac(serial).verify_slice(&bytes).is_ok()
    }
}

/// Hex digits (either case) as bytes.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes().chunks(2).map(|p| Some(digit(p[0])? << 4 | digit(p[1])?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> ReportKey {
        ReportKey::from_bytes("test", text.as_bytes()).unwrap()
    }

    #[test]
    fn a_token_is_good_for_its_serial_only() {
        let k = key(&"k".repeat(32));
        let t = k.token("MT2245X01234");
        assert_eq!(t.len(), 64);
        assert!(k.verify("MT2245X01234", &t));
        assert!(k.verify("MT2245X01234", &t.to_uppercase()), "hex in either case");
        assert!(!k.verify("MT2245X01235", &t), "another serial");
        assert!(!key(&"j".repeat(32)).verify("MT2245X01234", &t), "another key");
        assert!(!k.verify("MT2245X01234", &t[..62]), "cut short");
        assert!(!k.verify("MT2245X01234", ""), "missing");
        assert!(!k.verify("MT2245X01234", &"zz".repeat(32)), "not hex");
    }

    #[test]
    fn the_token_is_hmac_sha256_of_the_context_and_serial() {
        // RFC 4231-style check against the hmac crate's own one-shot: the construction is
        // exactly HMAC-SHA256(key, CONTEXT || serial), so other tools can compute it.
        let k = key("0123456789abcdef0123456789abcdef");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"ztp-operator report token v1\0SN1");
        let want: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(k.token("SN1"), want);
    }

    #[test]
    fn keys_are_long_enough_and_random() {
        assert!(matches!(ReportKey::from_bytes("s", b"short\n"), Err(KeyError::Short { len: 5, .. })));
        let stored = format!("  {}\n", "a".repeat(32));
        assert_eq!(key(&stored).as_bytes(), "a".repeat(32).as_bytes(), "white space trimmed");
        let (a, b) = (ReportKey::generate().unwrap(), ReportKey::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes().len(), 64);
        assert!(format!("{a:?}").contains("redacted") && !format!("{a:?}").contains(&a.token("x")[..8]));
    }
}
