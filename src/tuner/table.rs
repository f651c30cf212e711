//! The tuner's table of predicted times, logged once per communicator under the `TUNING`
//! subsystem (`OXCCL_DEBUG=INFO OXCCL_DEBUG_SUBSYS=TUNING`).

use super::{choose, Decisions, LinkClass};
use crate::config::Config;
use crate::types::DataType;
use oxccl_algorithms::cost::{estimate, LinkCost};
use oxccl_algorithms::{build, Algorithm, Collective};

/// Link parameters assumed for ranks that share memory: about 1 µs per synchronisation,
/// 10 GB/s of copy, 20 GB/s of reduction (the 2-core development machine).
pub(super) const SHM_LINK: LinkCost = LinkCost {
    alpha_s: 1e-6,
    beta_s_per_byte: 1e-10,
    gamma_s_per_byte: 5e-11,
};

/// Link parameters assumed for TCP: about 10 µs per message, 1 GB/s.
pub(super) const TCP_LINK: LinkCost = LinkCost {
    alpha_s: 10e-6,
    beta_s_per_byte: 1e-9,
    gamma_s_per_byte: 5e-11,
};

/// Link parameters assumed for InfiniBand/RoCE verbs: about 3 µs per message, 12 GB/s
/// (a 100 Gb/s port at 95%; measured links in a tuning file replace it).
pub(super) const IB_LINK: LinkCost = LinkCost {
    alpha_s: 3e-6,
    beta_s_per_byte: 1.0 / 12e9,
    gamma_s_per_byte: 5e-11,
};

const SIZES: &[usize] = &[8, 4096, 64 << 10, 1 << 20, 64 << 20];

/// Logs, per collective, the α–β–γ time rank 0's plan of every usable algorithm would take at
/// a few sizes, and what the tuner picks. The link parameters are the tuning file's for
/// `class` when it has them, else the built-in ones (shared memory for `shm`, verbs for
/// `ib` and `mixed-ib`, TCP otherwise). Does nothing unless the `oxccl::tuning` target is enabled at INFO.
pub(crate) fn log_table(
    config: &Config,
    tuned: Option<&Decisions>,
    class: LinkClass,
    nranks: u32,
    window: bool,
) {
    if !tracing::enabled!(target: "oxccl::tuning", tracing::Level::INFO) {
        return;
    }
    let measured_link = config.tuning.as_ref().and_then(|f| f.links.get(&class));
    let link = match (measured_link, class) {
        (Some(l), _) => *l,
        (None, LinkClass::Shm) => SHM_LINK,
        (None, c) if c.verbs_between_hosts() => IB_LINK,
        (None, _) => TCP_LINK,
    };
    for collective in [
        Collective::AllReduce,
        Collective::AllGather,
        Collective::ReduceScatter,
        Collective::Broadcast { root: 0 },
        Collective::Reduce { root: 0 },
        Collective::AllToAll,
    ] {
        let algorithms: Vec<Algorithm> = Algorithm::ALL
            .iter()
            .copied()
            .filter(|a| a.supports(collective) && (window || !a.is_load_store()))
            .collect();
        let mut table = format!("{:>10}", "bytes");
        for a in &algorithms {
            table.push_str(&format!(" {:>18}", a.name()));
        }
        table.push_str("  chosen\n");
        for &bytes in SIZES {
            table.push_str(&format!("{bytes:>10}"));
            for &a in &algorithms {
                let us = build(a, collective, nranks, 0, 1)
                    .map(|plan| estimate(&plan, bytes as u64, 4, &link) * 1e6);
                match us {
                    Ok(us) => table.push_str(&format!(" {us:>16.1}us")),
                    Err(_) => table.push_str(&format!(" {:>18}", "-")),
                }
            }
            let chosen = choose(
                config,
                tuned,
                collective,
                DataType::Float32,
                bytes / 4,
                nranks,
                window,
            );
            table.push_str(&format!("  {}\n", chosen.algorithm));
        }
        tracing::info!(
            target: "oxccl::tuning",
            "{} on {nranks} ranks, predicted per rank-0 plan ({} link, {} α–β–γ; chosen by {}):\n{table}",
            collective.name(),
            class.name(),
            if measured_link.is_some() { "measured" } else { "built-in" },
            if tuned.is_some() { "OXCCL_TUNING_FILE's measurements" } else { "built-in thresholds" },
        );
    }
}
