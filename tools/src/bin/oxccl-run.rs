//! `oxccl-run -n N [options] [--] program [args...]`: starts the N ranks of an oxccl job on
//! this host. See [`oxccl_tools::launch`] for the behaviour.
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(oxccl_tools::launch::main());
}
