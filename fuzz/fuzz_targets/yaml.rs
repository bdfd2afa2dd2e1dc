#![no_main]
//! See `ztp_operator::fuzzing::yaml`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ztp_operator::fuzzing::yaml(data));
