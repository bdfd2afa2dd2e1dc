//! Object names made from outside text: DNS-safe (a DNS-1123 label, so also a valid label value)
//! and unique per text. Switches are named for their serial numbers ([`for_serial`]); a
//! NautobotSource names its OsImages for their store path with the same rule ([`label_for`]).

use sha2::{Digest, Sha256};

/// Longest name made (a DNS-1123 label).
pub const MAX_NAME: usize = 63;
/// Hex digits of the text's SHA-256 appended when the text is not a name by itself.
const SUFFIX_HEX: usize = 10;

/// The Switch name for a serial number: [`label_for`] with prefix `sw`. A serial that is already
/// a DNS-1123 label (lower-case letters, digits and `-`, at most 63) is its own name; any other is
/// lower-cased, every run of other characters becomes one `-`, and `-` plus the first 10 hex
/// digits of the serial's SHA-256 are appended, so `AB/12` and `ab-12` (two serials) never share
/// a name.
pub fn for_serial(serial: &str) -> String {
    label_for(serial, "sw")
}

/// A DNS-1123 label for `text`, one per text: `text` itself when it is a label already, else
/// its lower-cased letters and digits (every run of other characters one `-`), cut to leave room
/// for `-` and the first 10 hex digits of `text`'s SHA-256, which are appended. `prefix` stands
/// in for the readable part when nothing of `text` is left (`é` → `{prefix}-…`); it must be a
/// short label itself (a few lower-case letters).
pub fn label_for(text: &str, prefix: &str) -> String {
    debug_assert!(is_label(prefix) && prefix.len() < MAX_NAME - SUFFIX_HEX - 1, "{prefix:?}");
    if is_label(text) {
        return text.to_owned();
    }
    let mut base = String::with_capacity(text.len().min(MAX_NAME));
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.is_empty() && !base.ends_with('-') {
            base.push('-');
        }
    }
    base.truncate(MAX_NAME - SUFFIX_HEX - 1);
    let base = base.trim_end_matches('-');
    let hash = Sha256::digest(text.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    let suffix = &hex[..SUFFIX_HEX];
    if base.is_empty() { format!("{prefix}-{suffix}") } else { format!("{base}-{suffix}") }
}

/// Whether `s` is a DNS-1123 label.
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_case_serial_is_its_own_name() {
        assert_eq!(for_serial("mt2245x01234"), "mt2245x01234");
        assert_eq!(for_serial("a-1"), "a-1");
    }

    #[test]
    fn other_serials_are_made_safe_and_keep_apart() {
        let upper = for_serial("MT2245X01234");
        assert!(upper.starts_with("mt2245x01234-"), "{upper}");
        assert_ne!(upper, for_serial("mt2245x01234"));
        assert_ne!(for_serial("AB/12"), for_serial("AB_12"));
        assert_eq!(for_serial("AB/12"), for_serial("AB/12"), "stable");
        assert!(for_serial("ab//__12").starts_with("ab-12-"));
        assert!(for_serial("-x-").starts_with("x-"), "{}", for_serial("-x-"));
        assert!(for_serial("///").starts_with("sw-"));
        assert!(for_serial("é").starts_with("sw-"));
    }

    #[test]
    fn every_name_is_a_label() {
        let long = "X".repeat(128);
        for serial in ["A", "a", "-", "a-", "Ab.C", &long, "0", "12345678901234567890", "é-ü", "a b\tc"] {
            let name = for_serial(serial);
            assert!(is_label(&name), "{serial:?} → {name:?}");
        }
        assert!(for_serial(&long).len() <= MAX_NAME);
        assert!(!is_label(&"a".repeat(64)) && !is_label("") && !is_label("-a") && !is_label("A"));
    }

    #[test]
    fn other_texts_use_their_own_prefix_and_the_same_rule() {
        assert_eq!(label_for("SN/1", "sw"), for_serial("SN/1"));
        assert_eq!(label_for("sonic-4.0.0-x.bin", "osi"), label_for("sonic-4.0.0-x.bin", "osi"));
        assert!(label_for("sonic-4.0.0-x.bin", "osi").starts_with("sonic-4-0-0-x-bin-"));
        assert!(label_for("…", "osi").starts_with("osi-"));
        assert_eq!(label_for("onie-1", "osi"), "onie-1");
    }
}
