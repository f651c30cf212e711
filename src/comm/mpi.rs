//! A communicator over the processes of an MPI communicator (feature `mpi`): rank 0 creates
//! the unique id and hosts the rendezvous, MPI broadcasts the id, and every process joins.
//! This is how jobs started by `mpirun`/`mpiexec` (Open MPI, MPICH) on several hosts find
//! each other without `OXCCL_ROOT`; the id's secret travels over MPI only.

use super::Communicator;
use crate::bootstrap::UniqueId;
use crate::config::Config;
use crate::error::{Error, Result};
use mpi::traits::{Communicator as MpiCommunicator, CommunicatorCollectives, Root};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// Longest host name compared when deciding whether every process shares rank 0's host.
const NAME_BYTES: usize = 256;

impl Communicator {
    /// A communicator whose ranks are `mpi_comm`'s (e.g. `universe.world()`), same order.
    /// Collective over `mpi_comm`: every process must call it. Rank 0's rendezvous listens
    /// on the loopback address when every process runs on rank 0's host (and neither
    /// `OXCCL_SOCKET_ADDR` nor `OXCCL_SOCKET_IFNAME` is set), else where
    /// [`crate::topology::rendezvous_ip`] says.
    pub fn from_mpi<C: MpiCommunicator>(mpi_comm: &C, config: Config) -> Result<Self> {
        crate::logging::init();
        let (rank, size) = (mpi_comm.rank(), mpi_comm.size());
        let root = mpi_comm.process_at_rank(0);
        let single_host = all_on_rank0_host(mpi_comm);
        // Byte 0 says whether rank 0 made the id, so a failure there reaches every process
        // at the broadcast instead of leaving them to time out.
        let mut msg = [0u8; 1 + UniqueId::BYTES];
        if rank == 0 {
            let made = root_address(&config, single_host)
                .and_then(|bind| UniqueId::new(bind, config.timeout));
            match made {
                Ok(id) => {
                    msg[0] = 1;
                    msg[1..].copy_from_slice(&id.to_bytes());
                }
                Err(e) => {
                    root.broadcast_into(&mut msg[..]);
                    return Err(e);
                }
            }
        }
        root.broadcast_into(&mut msg[..]);
        if msg[0] != 1 {
            return Err(Error::Bootstrap {
                rank: rank as u32,
                detail: "MPI rank 0 could not start the rendezvous (its error says why)".into(),
            });
        }
        let id = UniqueId::from_bytes(&msg[1..])?;
        Communicator::init(id, size as u32, rank as u32, config)
    }
}

/// Whether every process of `comm` runs on rank 0's host (MPI's processor name).
fn all_on_rank0_host<C: MpiCommunicator>(comm: &C) -> bool {
    let mut name = [0u8; NAME_BYTES];
    let own = mpi::environment::processor_name().unwrap_or_default();
    let n = own.len().min(NAME_BYTES);
    name[..n].copy_from_slice(&own.as_bytes()[..n]);
    let mut root_name = name;
    comm.process_at_rank(0).broadcast_into(&mut root_name[..]);
    let same = u8::from(root_name == name);
    let mut all = 0u8;
    comm.all_reduce_into(&same, &mut all, mpi::collective::SystemOperation::min());
    all == 1
}

/// Where rank 0's rendezvous listens (see [`Communicator::from_mpi`]).
fn root_address(config: &Config, single_host: bool) -> Result<SocketAddr> {
    if single_host && config.socket_addr.is_none() && config.socket_ifname.is_none() {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    }
    Ok(SocketAddr::new(crate::topology::rendezvous_ip(config)?, 0))
}
