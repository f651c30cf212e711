//! Fuzz target: `oxccl::fuzzing::bootstrap_messages` (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxccl::fuzzing::bootstrap_messages(data));
