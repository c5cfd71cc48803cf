#![no_main]
//! One session driven by a program of bytes, time steps and decisions.
libfuzzer_sys::fuzz_target!(|data: &[u8]| testament::fuzzing::session(data));
