//! Every rank of a world as a thread of this process, each with its own communicator.

use candle_core::{Error, Result};
use oxccl::{Communicator, Config, UniqueId};

/// Runs `f` on each of `dp` ranks (the whole world: `dp·tp` for a mesh), each a thread of
/// this process with its own oxccl communicator (rendezvous on a local port), and returns
/// their results in rank order. With `dp == 1` no communicator is created.
pub fn run_threads<R: Send + 'static>(
    dp: u32,
    config: Config,
    f: impl Fn(Option<Communicator>) -> Result<R> + Send + Sync + Clone + 'static,
) -> Result<Vec<R>> {
    if dp == 1 {
        return Ok(vec![f(None)?]);
    }
    let any = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let id = UniqueId::new(any, config.timeout).map_err(Error::wrap)?;
    let handles: Vec<_> = (0..dp)
        .map(|rank| {
            let (f, config) = (f.clone(), config.clone());
            std::thread::spawn(move || {
                let comm = Communicator::init(id, dp, rank, config).map_err(Error::wrap)?;
                f(Some(comm))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for (rank, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(r) => out.push(r?),
            Err(_) => candle_core::bail!("rank {rank} panicked"),
        }
    }
    Ok(out)
}
