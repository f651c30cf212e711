//! A communicator made from MPI's world (feature `mpi`): MPI broadcasts the unique id, so
//! `mpirun` alone starts the job on one host or several, without `OXCCL_ROOT`. Checks an
//! all-reduce and a broadcast against the values every rank can predict.
//!
//! ```text
//! cargo build --features mpi --example mpi_allreduce && \
//!   mpirun -np 4 target/debug/examples/mpi_allreduce
//! ```

use oxccl::{Communicator, Config, ReduceOp};

fn main() {
    let Some(universe) = mpi::initialize() else {
        eprintln!("mpi_allreduce: MPI was already initialised");
        std::process::exit(2);
    };
    if let Err(e) = run(&universe.world()) {
        eprintln!("mpi_allreduce: {e}");
        std::process::exit(1);
    }
}

fn run(world: &mpi::topology::SimpleCommunicator) -> oxccl::Result<()> {
    let config = Config::from_env()?;
    let mut comm = Communicator::from_mpi(world, config)?;
    let (rank, n) = (comm.rank(), comm.size());
    let mine: Vec<f64> = (0..4099).map(|i| (rank as f64 + 1.0) * i as f64).collect();
    let mut sum = vec![0.0; mine.len()];
    comm.all_reduce(&mine, &mut sum, ReduceOp::Sum)?;
    let total = f64::from(n * (n + 1) / 2);
    let wrong = (0..sum.len())
        .filter(|&i| sum[i] != total * i as f64)
        .count();
    let mut word = [0u64; 3];
    if rank == 0 {
        word = [7, 11, 13];
    }
    comm.broadcast_in_place(&mut word, 0)?;
    println!(
        "rank {rank}/{n} on node {} (local rank {} of {}): all_reduce {wrong} wrong, broadcast {word:?}",
        comm.nodes().node_of(rank).unwrap_or(0),
        comm.local_rank(),
        comm.local_size()
    );
    if wrong != 0 || word != [7, 11, 13] {
        std::process::exit(1);
    }
    println!("mpi_allreduce OK");
    Ok(())
}
