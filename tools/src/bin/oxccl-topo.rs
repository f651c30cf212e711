//! `oxccl-topo [--json|--xml]`: this host's topology, or the job's under a launcher (see
//! [`oxccl_tools::topo`]).
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(oxccl_tools::topo::main());
}
