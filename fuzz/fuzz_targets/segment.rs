#![no_main]
//! Path-segment validation in the code against the CRD's CEL rule (`size() <= 128`, the regular
//! expression, no `..`) and the OpenAPI `pattern`: the same verdict for every string, except the
//! store's reserved names, which only the code refuses.
use std::sync::LazyLock;

use regex::Regex;
use ztp_operator::fuzzing::{
    MAX_SEGMENT_LEN, SEGMENT_CEL_REGEX, SEGMENT_PATTERN, segment_is_reserved, segment_is_valid,
};

static CEL: LazyLock<Regex> = LazyLock::new(|| Regex::new(SEGMENT_CEL_REGEX).expect("the CRD's regex"));
static PATTERN: LazyLock<Regex> = LazyLock::new(|| Regex::new(SEGMENT_PATTERN).expect("the OpenAPI pattern"));

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else { return };
    let code = segment_is_valid(name);
    let within = name.chars().count() <= MAX_SEGMENT_LEN;
    let cel = within && CEL.is_match(name) && !name.contains("..");
    let pattern = within && PATTERN.is_match(name);
    let reserved = segment_is_reserved(name);
    assert_eq!(code, cel && !reserved, "code vs CRD rule for {name:?}");
    assert_eq!(cel, pattern, "CRD rule vs OpenAPI pattern for {name:?}");
});
