//! The exported communicator calls: ids, creation, destruction, queries, errors.
//!
//! - `ncclGetUniqueId` starts the id's rendezvous in the calling process (oxccl's
//!   `UniqueId::new`), bound to `OXCCL_SOCKET_ADDR` (or `NCCL_SOCKET_IFNAME`'s address), else
//!   this host's first IPv4 address that is not loopback or docker, else 127.0.0.1. With
//!   `NCCL_COMM_ID=host:port` it starts nothing: every process computes the same id (its
//!   secret is `OXCCL_SECRET`, or derived from the address: weaker), and rank 0 hosts the
//!   rendezvous at that address when it joins, as NCCL does.
//! - A config with `blocking = 0` makes `ncclCommInitRankConfig` return `ncclInProgress` at
//!   once with the handle written, and create the communicator on a thread;
//!   `ncclCommGetAsyncError` reports `ncclInProgress` until it is done. Any other call on the
//!   communicator waits for the init first. Inside a group, creation also runs on a thread
//!   and the outermost `ncclGroupEnd` waits for it. Split is always synchronous.
//! - `ncclCommCuDevice` reports `ncclCommInitAll`'s `devlist[i]` (or `i`), else 0: oxccl
//!   uses no device.

use crate::env;
use crate::error::{CResult, Failure};
use crate::ffi::{self, NcclConfig, NcclResult, NcclUniqueId};
use crate::handle::{CommHandle, CommPtr};
use crate::{export, need, write_out};
use oxccl::bootstrap::{RootServer, Secret};
use oxccl::{Communicator, UniqueId};
use std::ffi::{c_char, c_int};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// `NCCL_COMM_ID`'s address, if set.
fn comm_id_addr() -> CResult<Option<SocketAddr>> {
    let Some(v) = std::env::var("NCCL_COMM_ID")
        .ok()
        .filter(|v| !v.trim().is_empty())
    else {
        return Ok(None);
    };
    let addr = v
        .trim()
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| Failure::invalid(format!("NCCL_COMM_ID={v}: expected host:port")))?;
    Ok(Some(addr))
}

/// The secret of an `NCCL_COMM_ID` id: `OXCCL_SECRET`, or derived from the address.
fn comm_id_secret(addr: SocketAddr) -> CResult<Secret> {
    match std::env::var("OXCCL_SECRET") {
        Ok(hex) if !hex.trim().is_empty() => Ok(Secret::from_hex(hex.trim())?),
        _ => Ok(Secret::derived(&format!("NCCL_COMM_ID={addr}"))),
    }
}

/// Where `ncclGetUniqueId` binds its rendezvous: `oxccl::topology::rendezvous_ip` with the
/// `OXCCL_*`/`NCCL_*` configuration (socket address, interface selection).
fn root_bind_ip() -> CResult<IpAddr> {
    Ok(oxccl::topology::rendezvous_ip(&env::config()?)?)
}

export! {
    /// Writes `NCCL_VERSION_CODE` (2.28.7: 22807).
    fn ncclGetVersion / pncclGetVersion(version: *mut c_int) {
        // SAFETY: `version` is valid for a write if non-null (NCCL's contract).
        unsafe { write_out(version, "version", ffi::VERSION_CODE)? };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Creates a unique id (see the module doc for where its rendezvous runs).
    fn ncclGetUniqueId / pncclGetUniqueId(unique_id: *mut NcclUniqueId) {
        need(unique_id, "uniqueId")?;
        let id = match comm_id_addr()? {
            Some(root) => UniqueId { root, secret: comm_id_secret(root)? },
            None => UniqueId::new(SocketAddr::new(root_bind_ip()?, 0), env::config()?.timeout)?,
        };
        let out = NcclUniqueId { internal: id.to_bytes().map(|b| b as c_char) };
        // SAFETY: checked non-null above.
        unsafe { unique_id.write(out) };
        Ok(ffi::SUCCESS)
    }
}

/// Reads `blocking` from a caller's config (NULL: blocking).
///
/// # Safety
/// `config`, if non-null, must point to an `ncclConfig_t` of at least its `size` field's
/// bytes.
unsafe fn blocking(config: *const NcclConfig) -> CResult<bool> {
    if config.is_null() {
        return Ok(true);
    }
    // SAFETY: non-null; the header fields are in every version of the struct.
    let (size, magic) = unsafe { ((*config).size, (*config).magic) };
    if magic != ffi::CONFIG_MAGIC {
        return Err(Failure::invalid(
            "config was not initialised with NCCL_CONFIG_INITIALIZER (bad magic)",
        ));
    }
    if size < std::mem::offset_of!(NcclConfig, cga_cluster_size) {
        return Err(Failure::invalid(format!("config size {size} is too small")));
    }
    // SAFETY: `size` covers the field.
    let b = unsafe { (*config).blocking };
    Ok(b != 0)
}

/// The rank and size of an init call, checked.
fn rank_args(nranks: c_int, rank: c_int) -> CResult<(u32, u32)> {
    let n = u32::try_from(nranks)
        .ok()
        .filter(|n| (1..=oxccl::MAX_RANKS).contains(n))
        .ok_or_else(|| {
            Failure::invalid(format!("nranks {nranks} must be 1..={}", oxccl::MAX_RANKS))
        })?;
    let r = u32::try_from(rank).ok().filter(|r| *r < n).ok_or_else(|| {
        Failure::invalid(format!("rank {rank} is out of range for {nranks} ranks"))
    })?;
    Ok((n, r))
}

/// Joins `id` as `rank`, hosting `NCCL_COMM_ID`'s rendezvous first on rank 0.
fn join(id: UniqueId, nranks: u32, rank: u32, cfg: oxccl::Config) -> oxccl::Result<Communicator> {
    let comm_id = comm_id_addr().ok().flatten();
    if rank == 0 && comm_id == Some(id.root) {
        let root = RootServer::start(id.root, id.secret, nranks, cfg.timeout).or_else(|_| {
            let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), id.root.port());
            RootServer::start(any, id.secret, nranks, cfg.timeout)
        })?;
        root.detach();
    }
    Communicator::init(id, nranks, rank, cfg)
}

/// `ncclCommInitRank(Config)`.
///
/// # Safety
/// As [`blocking`] for `config`; `comm` valid for a write if non-null.
unsafe fn init_rank(
    comm: *mut CommPtr,
    nranks: c_int,
    id: NcclUniqueId,
    rank: c_int,
    config: *const NcclConfig,
) -> CResult {
    need(comm, "comm")?;
    let (n, r) = rank_args(nranks, rank)?;
    // SAFETY: forwarded.
    let blocking = unsafe { blocking(config)? };
    let id = UniqueId::from_bytes(&id.internal.map(|c| c as u8))?;
    let cfg = env::config()?;
    env::print_version_once();
    let in_group = crate::group::in_group();
    let handle = if blocking && !in_group {
        CommHandle::ready(join(id, n, r, cfg)?)
    } else {
        CommHandle::initializing(r, n, move || join(id, n, r, cfg))?
    };
    if in_group {
        crate::group::defer_init(handle.clone());
    }
    // SAFETY: checked non-null above.
    unsafe { comm.write(handle.publish()) };
    Ok(if blocking {
        ffi::SUCCESS
    } else {
        ffi::IN_PROGRESS
    })
}

export! {
    /// Joins the communicator `comm_id` as `rank` of `nranks` with `config`.
    fn ncclCommInitRankConfig / pncclCommInitRankConfig(comm: *mut CommPtr, nranks: c_int,
        comm_id: NcclUniqueId, rank: c_int, config: *mut NcclConfig) {
        // SAFETY: the caller's contract.
        unsafe { init_rank(comm, nranks, comm_id, rank, config) }
    }
}

export! {
    /// Joins the communicator `comm_id` as `rank` of `nranks` (blocking).
    fn ncclCommInitRank / pncclCommInitRank(comm: *mut CommPtr, nranks: c_int, comm_id: NcclUniqueId,
        rank: c_int) {
        // SAFETY: the caller's contract; no config.
        unsafe { init_rank(comm, nranks, comm_id, rank, std::ptr::null()) }
    }
}

export! {
    /// Creates `ndev` communicators of one process (ranks on threads); rank `i` reports
    /// device `devlist[i]` (or `i` without a list) in `ncclCommCuDevice`.
    fn ncclCommInitAll / pncclCommInitAll(comm: *mut CommPtr, ndev: c_int, devlist: *const c_int) {
        need(comm, "comm")?;
        let (n, _) = rank_args(ndev, 0)?;
        let cfg = env::config()?;
        env::print_version_once();
        let id = UniqueId::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), cfg.timeout)?;
        let comms: Vec<oxccl::Result<Communicator>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..n)
                .map(|r| {
                    let cfg = cfg.clone();
                    s.spawn(move || Communicator::init(id, n, r, cfg))
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err(oxccl::Error::Internal("init thread panicked".into()))))
                .collect()
        });
        let comms: Vec<Communicator> = comms.into_iter().collect::<oxccl::Result<_>>()?;
        for (i, c) in comms.into_iter().enumerate() {
            let h = CommHandle::ready(c);
            let dev = if devlist.is_null() {
                i as c_int
            } else {
                // SAFETY: a non-null devlist holds `ndev` ints (NCCL's contract).
                unsafe { devlist.add(i).read() }
            };
            h.device.store(dev, std::sync::atomic::Ordering::Relaxed);
            // SAFETY: `comm` points to `ndev` handles (NCCL's contract), checked non-null.
            unsafe { comm.add(i).write(h.publish()) };
        }
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Completes outstanding operations: GPU ops still queued run first (host-buffer ops
    /// complete before their call returns).
    fn ncclCommFinalize / pncclCommFinalize(comm: CommPtr) {
        let h = CommHandle::get(comm)?;
        h.finish_gpu_ops(false);
        h.with_comm(|_| Ok(ffi::SUCCESS))
    }
}

export! {
    /// Destroys the communicator (waiting for a non-blocking init); NULL is accepted.
    fn ncclCommDestroy / pncclCommDestroy(comm: CommPtr) {
        if !comm.is_null() {
            CommHandle::unpublish(comm)?.destroy();
        }
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Aborts the communicator: peers waiting on this rank fail promptly.
    fn ncclCommAbort / pncclCommAbort(comm: CommPtr) {
        if !comm.is_null() {
            CommHandle::unpublish(comm)?.abort();
        }
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Splits `comm` by `color` (NCCL_SPLIT_NOCOLOR: join none, `*newcomm = NULL`), ordered by
    /// `key`; the new communicator keeps the parent's oxccl configuration.
    fn ncclCommSplit / pncclCommSplit(comm: CommPtr, color: c_int, key: c_int, newcomm: *mut CommPtr,
        config: *mut NcclConfig) {
        need(newcomm, "newcomm")?;
        let color = match color {
            ffi::SPLIT_NOCOLOR => None,
            c => Some(u32::try_from(c).map_err(|_| Failure::invalid(format!("color {c} is negative")))?),
        };
        // SAFETY: the caller's config, if any; only validated (split is synchronous).
        unsafe { blocking(config)? };
        let h = CommHandle::get(comm)?;
        // After the parent's GPU ops (the split is a collective, issued after them).
        h.drain_gpu_ops();
        let child = h.with_comm(|c| {
            let cfg = c.config().clone();
            Ok(c.split_with_config(color, key, cfg)?)
        })?;
        let out = child.map_or(std::ptr::null_mut(), |c| CommHandle::ready(c).publish());
        // SAFETY: checked non-null above.
        unsafe { newcomm.write(out) };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Writes `ncclInProgress` while a non-blocking init runs, then the first error or success.
    fn ncclCommGetAsyncError / pncclCommGetAsyncError(comm: CommPtr, async_error: *mut NcclResult) {
        need(async_error, "asyncError")?;
        let r = CommHandle::get(comm)?.async_error();
        // SAFETY: checked non-null above.
        unsafe { async_error.write(r) };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Writes the number of ranks.
    fn ncclCommCount / pncclCommCount(comm: CommPtr, count: *mut c_int) {
        let n = CommHandle::get(comm)?.nranks as c_int;
        // SAFETY: valid for a write if non-null (NCCL's contract).
        unsafe { write_out(count, "count", n)? };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Writes this rank.
    fn ncclCommUserRank / pncclCommUserRank(comm: CommPtr, rank: *mut c_int) {
        let r = CommHandle::get(comm)?.rank as c_int;
        // SAFETY: valid for a write if non-null (NCCL's contract).
        unsafe { write_out(rank, "rank", r)? };
        Ok(ffi::SUCCESS)
    }
}

export! {
    /// Writes the rank's device: its `ncclCommInitAll` entry, else 0 (oxccl uses none).
    fn ncclCommCuDevice / pncclCommCuDevice(comm: CommPtr, device: *mut c_int) {
        let d = CommHandle::get(comm)?.device.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: valid for a write if non-null (NCCL's contract).
        unsafe { write_out(device, "device", d)? };
        Ok(ffi::SUCCESS)
    }
}

/// `ncclGetErrorString`: the fixed text of a result.
#[no_mangle]
pub extern "C" fn ncclGetErrorString(result: NcclResult) -> *const c_char {
    ffi::result_string(result).as_ptr().cast()
}

/// The profiling alias of [`ncclGetErrorString`].
#[no_mangle]
pub extern "C" fn pncclGetErrorString(result: NcclResult) -> *const c_char {
    ncclGetErrorString(result)
}

/// `ncclGetLastError`: this thread's last error message (`comm` is not consulted).
#[no_mangle]
pub extern "C" fn ncclGetLastError(_comm: CommPtr) -> *const c_char {
    crate::error::last_error_ptr()
}

/// The profiling alias of [`ncclGetLastError`].
#[no_mangle]
pub extern "C" fn pncclGetLastError(comm: CommPtr) -> *const c_char {
    ncclGetLastError(comm)
}
