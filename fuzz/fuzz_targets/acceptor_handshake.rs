//! Fuzz target: `oxccl_transports::fuzzing::acceptor_handshake` (see its doc).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| oxccl_transports::fuzzing::acceptor_handshake(data));
