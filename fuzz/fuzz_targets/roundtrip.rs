#![no_main]
//! Whatever decodes must encode back to itself.
libfuzzer_sys::fuzz_target!(|data: &[u8]| testament::fuzzing::roundtrip(data));
