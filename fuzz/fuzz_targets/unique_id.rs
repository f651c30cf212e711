//! Fuzz target: `oxccl::fuzzing::unique_id` (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxccl::fuzzing::unique_id(data));
