//! Creating a communicator: rendezvous, choose a transport per peer, connect.

mod ib;
mod rank_info;
mod shm;
mod spin;
mod tcp;

use super::Communicator;
use crate::bootstrap::{BootstrapClient, UniqueId};
use crate::config::{Config, TransportChoice};
use crate::engine::{Engine, Links};
use crate::error::{Error, Result};
use crate::tuner::LinkClass;
use oxccl_transports::tcp::Listener;
use oxccl_transports::{FifoConfig, RecvChannel, SendChannel};
use rank_info::{check_same_config, host_identity, shared_config, RankInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

const DATA_KEY: &str = "oxccl data connection";

/// Maps a transport error during setup to one naming both ranks and the step.
fn transport_error(
    rank: u32,
    peer: u32,
    op: impl Into<String>,
) -> impl FnOnce(oxccl_transports::Error) -> Error {
    let op = op.into();
    move |source| Error::Transport {
        rank,
        peer,
        op,
        source,
    }
}

/// Decodes one rank's connection details as the root relays them (for the fuzz targets).
pub(crate) fn decode_rank_info(b: &[u8], rank: usize) -> Result<()> {
    RankInfo::decode(b, rank).map(drop)
}

/// A `[peer][channel]` table with no connections yet.
fn table<T>(nranks: u32, nch: usize) -> Vec<Vec<Option<T>>> {
    (0..nranks)
        .map(|_| (0..nch).map(|_| None).collect())
        .collect()
}

pub(super) fn init(id: UniqueId, nranks: u32, rank: u32, config: Config) -> Result<Communicator> {
    crate::logging::init();
    config.validate()?;
    if nranks == 0 || nranks > crate::MAX_RANKS {
        return Err(Error::invalid(
            "Communicator::init",
            format!("nranks must be 1..={}, got {nranks}", crate::MAX_RANKS),
        ));
    }
    if rank >= nranks {
        return Err(Error::invalid(
            "Communicator::init",
            format!("rank {rank} is out of range for {nranks} ranks"),
        ));
    }
    let start = Instant::now();
    let deadline = start + config.timeout;

    // Rendezvous: everyone's host, pid, listening address and shared settings.
    let mut boot = BootstrapClient::connect(&id, rank, nranks, config.timeout)?;
    // OXCCL_SOCKET_ADDR, else OXCCL_SOCKET_IFNAME, else the route to the root.
    let ip = crate::topology::listen_ip(&config, boot.local_ip(), id.root.ip())?;
    let listener = Listener::bind(SocketAddr::new(ip, 0)).map_err(|e| Error::Bootstrap {
        rank,
        detail: format!("cannot listen for peers on {ip}: {e} (set OXCCL_SOCKET_ADDR?)"),
    })?;
    // RDMA ports, unless verbs are ruled out; every rank says whether it has one, so all
    // agree on which pairs use verbs.
    let ib_ports = if config.ib_disable
        || matches!(
            config.transport,
            TransportChoice::Shm | TransportChoice::Tcp
        ) {
        Err("verbs are not asked for".to_owned())
    } else {
        oxccl_transports::ib::usable_ports(&config.ib).map_err(|e| match e {
            // The reason alone ("no IB device: ..."), without the error kind's prefix.
            oxccl_transports::Error::Config(why) => why,
            other => other.to_string(),
        })
    };
    let me = RankInfo {
        host: host_identity(&config),
        pid: std::process::id(),
        data_addr: listener.local_addr(),
        shared_config: shared_config(&config),
        ib_unusable: ib_ports.as_ref().err().cloned().unwrap_or_default(),
    };
    let infos: Vec<RankInfo> = boot
        .allgather(&me.encode())?
        .iter()
        .enumerate()
        .map(|(r, b)| RankInfo::decode(b, r))
        .collect::<Result<_>>()?;
    check_same_config(rank, &infos)?;

    // Transport per peer: shared memory on this host (unless tcp is forced), tcp otherwise.
    let local: Vec<u32> = (0..nranks)
        .filter(|&r| infos[r as usize].host == me.host)
        .collect();
    if config.transport == TransportChoice::Shm && local.len() != nranks as usize {
        let other = infos.iter().position(|i| i.host != me.host).unwrap_or(0);
        return Err(Error::Config {
            knob: "OXCCL_TRANSPORT",
            detail: format!(
                "shm was forced but rank {other} is on host {:?}, this rank on {:?}",
                infos[other].host, me.host
            ),
        });
    }
    let ib_everywhere = infos.iter().all(|i| i.ib_unusable.is_empty());
    if config.transport == TransportChoice::Ib && !ib_everywhere {
        let (r, info) = infos
            .iter()
            .enumerate()
            .find(|(_, i)| !i.ib_unusable.is_empty())
            .expect("some rank cannot use verbs");
        return Err(Error::Config {
            knob: "OXCCL_TRANSPORT",
            detail: format!(
                "ib was forced but rank {r} cannot use verbs: {}",
                info.ib_unusable
            ),
        });
    }
    let use_shm = |p: u32| {
        !matches!(config.transport, TransportChoice::Tcp | TransportChoice::Ib)
            && local.contains(&p)
    };
    // Verbs between hosts when both ends have a port (auto), or everywhere when forced.
    let use_ib = |p: u32| {
        !use_shm(p)
            && infos[p as usize].ib_unusable.is_empty()
            && me.ib_unusable.is_empty()
            && config.transport != TransportChoice::Tcp
    };
    let shm_peers: Vec<u32> = (0..nranks).filter(|&p| p != rank && use_shm(p)).collect();
    let ib_peers: Vec<u32> = (0..nranks).filter(|&p| p != rank && use_ib(p)).collect();
    let tcp_peers: Vec<u32> = (0..nranks)
        .filter(|&p| p != rank && !use_shm(p) && !use_ib(p))
        .collect();
    let nch = config.nchannels as usize;
    let fifo = FifoConfig {
        slot_size: config.slot_size,
        nslots: config.nslots,
    };

    let pids: Vec<u32> = infos.iter().map(|i| i.pid).collect();
    let plan = shm::ShmPlan {
        rank,
        local: &local,
        peers: &shm_peers,
        pids: &pids,
        host: &me.host,
    };
    // The load/store algorithms read every rank's window: only when all ranks share memory.
    let window_len = if shm_peers.len() + 1 == nranks as usize && nranks > 1 {
        config.shm_window
    } else {
        0
    };
    let shm = shm::setup(&plan, &id.secret, &mut boot, nch as u32, fifo, window_len)?;
    let key = id.secret.subkey(DATA_KEY);
    // Data connections to the TCP and verbs peers on every channel (verbs set up over
    // them), and one control connection (for the watchdog, "channel" `nch`) to every peer.
    let control = nch;
    let wanted: Vec<(u32, usize)> = tcp_peers
        .iter()
        .chain(&ib_peers)
        .flat_map(|&p| (0..nch).map(move |ch| (p, ch)))
        .chain((0..nranks).filter(|&p| p != rank).map(|p| (p, control)))
        .collect();
    let mut streams = tcp::connect_all(listener, key, &wanted, &infos, rank, deadline)?;
    boot.close();
    let controls: Vec<(u32, std::net::TcpStream)> = {
        let (c, d): (Vec<_>, Vec<_>) = streams.into_iter().partition(|s| s.1 == control);
        streams = d;
        c.into_iter().map(|(p, _, s)| (p, s)).collect()
    };
    let health = Arc::new(crate::health::Health::new(rank, nranks));
    let watchdog = if nranks > 1 {
        let status = config.status_dir.as_ref().map(|dir| {
            // A directory that cannot be made only costs the status files (logged there).
            let _ = std::fs::create_dir_all(dir);
            crate::health::watchdog::StatusFile {
                path: dir.join(format!("rank{rank}")),
                nranks,
                host: crate::topology::hostname_part(&me.host).to_owned(),
            }
        });
        Some(crate::health::watchdog::Watchdog::start(
            health.clone(),
            controls,
            status,
        )?)
    } else {
        None
    };

    let mut send: Vec<Vec<Option<Box<dyn SendChannel>>>> = table(nranks, nch);
    let mut recv: Vec<Vec<Option<Box<dyn RecvChannel>>>> = table(nranks, nch);
    let (ib_streams, streams): (Vec<_>, Vec<_>) = streams
        .into_iter()
        .partition(|(p, _, _)| ib_peers.contains(p));
    if !ib_streams.is_empty() {
        let ports = ib_ports.as_deref().unwrap_or_default();
        let labels: Vec<String> = infos
            .iter()
            .enumerate()
            .map(|(p, i)| format!("rank {p} ({})", i.data_addr))
            .collect();
        for (p, ch, tx, rx) in ib::connect(ib_streams, ports, &labels, &config, rank, deadline)? {
            send[p as usize][ch] = Some(tx);
            recv[p as usize][ch] = Some(rx);
        }
    }
    for (p, ch, s) in streams {
        let label = format!("rank {p} ({})", infos[p as usize].data_addr);
        let (tx, rx) = oxccl_transports::tcp::channel_pair(s, label, fifo)
            .map_err(transport_error(rank, p, "set up tcp channel"))?;
        send[p as usize][ch] = Some(Box::new(tx));
        recv[p as usize][ch] = Some(Box::new(rx));
    }
    if let Some(ctx) = shm.as_ref() {
        for &p in &shm_peers {
            let pl = plan.local_index(p);
            for ch in 0..nch {
                let tx = ctx.sender(pl, ch as u32);
                let tx = tx.map_err(transport_error(rank, p, "set up shm channel"))?;
                let rx = ctx.receiver(pl, ch as u32);
                let rx = rx.map_err(transport_error(rank, p, "set up shm channel"))?;
                send[p as usize][ch] = Some(Box::new(tx));
                recv[p as usize][ch] = Some(Box::new(rx));
            }
        }
    }
    let window = match shm.as_ref() {
        Some(ctx) if window_len > 0 => Some(ctx.window().map_err(transport_error(
            rank,
            rank,
            "set up shm window",
        ))?),
        _ => None,
    };
    let class = link_class(&config, &infos, ib_everywhere);
    let tuned = crate::tuner::decisions(&config, class, nranks, window.is_some()).map(Box::new);
    if rank == 0 {
        crate::tuner::log_table(&config, tuned.as_deref(), class, nranks, window.is_some());
    }
    tracing::info!(
        target: "oxccl::init",
        "rank {rank}/{nranks} ready in {:?}: {} shm peers, {} tcp peers, {} ib peers{}, {nch} \
         channels, host {:?}",
        start.elapsed(),
        shm_peers.len(),
        tcp_peers.len(),
        ib_peers.len(),
        match (&ib_ports, ib_peers.is_empty()) {
            (Ok(ports), false) => format!(
                " on {}",
                ports.iter().map(|p| p.describe()).collect::<Vec<_>>().join(", ")
            ),
            _ => String::new(),
        },
        me.host
    );
    if let Some(template) = &config.topo_dump_file {
        let lowest_on_host = local.first() == Some(&rank);
        crate::topology::dump_at_init(template, config.hostname.as_deref(), rank, lowest_on_host);
    }
    // Where every rank sits: plans follow the node-contiguous order, and the hierarchical
    // ones are chosen where the two-link model predicts they win.
    let nodes =
        super::NodeMap::from_hosts(&infos.iter().map(|i| i.host.as_str()).collect::<Vec<_>>());
    let layout = match nodes.nnodes() {
        0 | 1 => None,
        _ => Some(
            oxccl_algorithms::Nodes::new(nodes.node_of_each().to_vec())
                .map_err(|e| Error::invalid("Communicator::init", e.to_string()))?,
        ),
    };
    let planner = layout
        .as_ref()
        .and_then(|l| crate::tuner::NodePlanner::build(&config, l, class))
        .map(Box::new);
    Ok(Communicator {
        _watchdog: watchdog,
        rank,
        nranks,
        engine: Engine {
            links: Links {
                rank,
                nranks,
                slot_size: fifo.slot_size,
                zero_copy: config.zero_copy,
                chunk_bytes: fifo.slot_size * (fifo.nslots / 2).max(1),
                send,
                recv,
                shm,
                window: window.map(|w| crate::engine::Window::new(w, pids.clone())),
                registry: Default::default(),
            },
            timeout: config.timeout,
            spin: config.spin.unwrap_or_else(|| spin::auto_spin(local.len())),
            health,
        },
        advertised_ip: ip,
        config,
        failed: None,
        tags: super::tags::TagCounter::new(nranks),
        plans: Default::default(),
        tuned,
        link_class: class,
        layout,
        planner,
        shrinks: 0,
        checking: false,
        nodes,
    })
}

/// How the ranks reach each other, the same on every rank (the tuner's decisions depend on
/// it): shm when all are on one host (and no network transport is forced); otherwise tcp or
/// ib when no two ranks share memory, mixed or mixed-ib when some do. Verbs count only when
/// every rank can use them (`ib_everywhere`); a job where some cannot is tuned for TCP.
fn link_class(config: &Config, infos: &[RankInfo], ib_everywhere: bool) -> LinkClass {
    let mut hosts: Vec<&str> = infos.iter().map(|i| i.host.as_str()).collect();
    hosts.sort_unstable();
    let all = hosts.len();
    hosts.dedup();
    let ib = ib_everywhere && config.transport != TransportChoice::Tcp;
    let net_forced = matches!(config.transport, TransportChoice::Tcp | TransportChoice::Ib);
    match (net_forced || hosts.len() == all, hosts.len() == 1, ib) {
        (true, _, true) => LinkClass::Ib,
        (true, _, false) => LinkClass::Tcp,
        (false, true, _) => LinkClass::Shm,
        (false, false, true) => LinkClass::MixedIb,
        (false, false, false) => LinkClass::Mixed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infos(hosts: &[&str]) -> Vec<RankInfo> {
        hosts
            .iter()
            .map(|h| RankInfo {
                host: (*h).to_owned(),
                pid: 1,
                data_addr: "127.0.0.1:1".parse().unwrap(),
                shared_config: String::new(),
                ib_unusable: String::new(),
            })
            .collect()
    }

    #[test]
    fn link_class_follows_hosts_and_verbs() {
        let with = |t| Config {
            transport: t,
            ..Config::default()
        };
        let auto = with(TransportChoice::Auto);
        let two_hosts = infos(&["a", "a", "b", "b"]);
        assert_eq!(link_class(&auto, &infos(&["a", "a"]), true), LinkClass::Shm);
        assert_eq!(link_class(&auto, &two_hosts, true), LinkClass::MixedIb);
        assert_eq!(link_class(&auto, &two_hosts, false), LinkClass::Mixed);
        assert_eq!(link_class(&auto, &infos(&["a", "b"]), true), LinkClass::Ib);
        assert_eq!(
            link_class(&auto, &infos(&["a", "b"]), false),
            LinkClass::Tcp
        );
        assert_eq!(
            link_class(&with(TransportChoice::Tcp), &two_hosts, true),
            LinkClass::Tcp
        );
        assert_eq!(
            link_class(&with(TransportChoice::Ib), &infos(&["a", "a"]), true),
            LinkClass::Ib
        );
    }
}
