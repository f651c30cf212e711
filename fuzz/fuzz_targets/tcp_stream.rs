//! Fuzz target: `oxccl_transports::fuzzing::tcp_stream` (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxccl_transports::fuzzing::tcp_stream(data));
