//! Fuzz target: `oxccl::fuzzing::control_frames` (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxccl::fuzzing::control_frames(data));
