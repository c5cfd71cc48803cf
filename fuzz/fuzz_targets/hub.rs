#![no_main]
//! Several clients driven through the hub by a program of connects,
//! publishes, crashes, time steps, key rotations, ACL changes and answers.
libfuzzer_sys::fuzz_target!(|data: &[u8]| testament::fuzzing::hub(data));
