//! `all_gather_perf`: nccl-tests' binary name for `oxccl-perf all_gather` (same flags).
#![forbid(unsafe_code)]

fn main() {
    use oxccl_tools::perf::{coll::Coll, main_with};
    std::process::exit(main_with(Some(Coll::AllGather)));
}
