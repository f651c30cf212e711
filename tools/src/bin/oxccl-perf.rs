//! `oxccl-perf <collective> [flags]`: nccl-tests-compatible benchmarks of oxccl's
//! collectives (see [`oxccl_tools::perf`]).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(oxccl_tools::perf::main());
}
