#![no_main]
//! Arbitrary bytes, in arbitrary splits, through the decoder.
libfuzzer_sys::fuzz_target!(|data: &[u8]| testament::fuzzing::decode(data));
