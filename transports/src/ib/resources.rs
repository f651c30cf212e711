//! Owned verbs objects: an open device with its protection domain, registered memory, a
//! completion queue with its event channel, and queue pairs. Each frees itself on drop, in
//! the order verbs requires (queue pairs before their completion queues, memory regions
//! before the protection domain, the device last: every object holds an `Arc` of it).

use std::ffi::{c_int, c_void, CStr};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;

use super::verbs::{self, Verbs};
use crate::{Error, Result};

/// The last OS error, for messages.
fn os_error() -> std::io::Error {
    std::io::Error::last_os_error()
}

/// An open RDMA device and one protection domain on it.
pub(crate) struct Device {
    pub(crate) verbs: &'static Verbs,
    pub(crate) ctx: *mut verbs::ibv_context,
    pub(crate) pd: *mut verbs::ibv_pd,
    /// `mlx5_0`, `rxe0`.
    pub(crate) name: String,
}

// SAFETY: verbs objects may be used from any thread (libibverbs locks internally where it
// must); oxccl only moves them between threads, and each is used by one owner at a time.
unsafe impl Send for Device {}
// SAFETY: as above; the shared methods only read the pointers.
unsafe impl Sync for Device {}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device").field("name", &self.name).finish()
    }
}

impl Device {
    /// Opens `dev` and allocates a protection domain.
    ///
    /// # Safety
    /// `dev` must come from the live device list of `verbs`.
    pub(crate) unsafe fn open(verbs: &'static Verbs, dev: *mut verbs::ibv_device) -> Result<Self> {
        // SAFETY: the caller guarantees `dev` is a live list entry; the name is a C string
        // owned by the device, copied before the list is freed.
        let name = unsafe { CStr::from_ptr((verbs.get_device_name)(dev)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: as above.
        let ctx = unsafe { (verbs.open_device)(dev) };
        if ctx.is_null() {
            return Err(Error::io(format!("opening RDMA device {name}"), os_error()));
        }
        // SAFETY: `ctx` was just opened.
        let pd = unsafe { (verbs.alloc_pd)(ctx) };
        if pd.is_null() {
            let e = os_error();
            // SAFETY: `ctx` is open and owns nothing yet.
            unsafe { (verbs.close_device)(ctx) };
            return Err(Error::io(
                format!("allocating a protection domain on {name}"),
                e,
            ));
        }
        Ok(Self {
            verbs,
            ctx,
            pd,
            name,
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: every object made on this device holds an `Arc` of it, so none is left;
        // the pointers are the ones opened in `open`.
        unsafe {
            (self.verbs.dealloc_pd)(self.pd);
            (self.verbs.close_device)(self.ctx);
        }
    }
}

/// Page-aligned anonymous memory registered with a device.
pub(crate) struct Registered {
    dev: Arc<Device>,
    ptr: *mut u8,
    len: usize,
    mr: *mut verbs::ibv_mr,
}

// SAFETY: the memory and registration are owned; see `Device`.
unsafe impl Send for Registered {}

impl Registered {
    /// `len` zeroed bytes (at least one page), registered for local writes and, when
    /// `remote_write`, for the peer's RDMA writes.
    pub(crate) fn new(dev: &Arc<Device>, len: usize, remote_write: bool) -> Result<Self> {
        let len = len.max(1).next_multiple_of(4096);
        // SAFETY: a fresh private anonymous mapping aliases nothing.
        let ptr = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .map_err(|e| Error::io(format!("allocating {len} bytes for RDMA"), e.into()))?
        .cast::<u8>();
        let mut access = verbs::ACCESS_LOCAL_WRITE;
        if remote_write {
            access |= verbs::ACCESS_REMOTE_WRITE;
        }
        // SAFETY: `ptr..ptr+len` is our own mapping, alive until `drop` deregisters it.
        let mr = unsafe { (dev.verbs.reg_mr)(dev.pd, ptr.cast::<c_void>(), len, access) };
        if mr.is_null() {
            let e = os_error();
            // SAFETY: the mapping was made above and is not registered.
            let _ = unsafe { rustix::mm::munmap(ptr.cast(), len) };
            return Err(Error::io(
                format!(
                    "registering {len} bytes with {} (locked-memory limit too low? see ulimit -l)",
                    dev.name
                ),
                e,
            ));
        }
        Ok(Self {
            dev: dev.clone(),
            ptr,
            len,
            mr,
        })
    }

    /// The address as the device sees it.
    pub(crate) fn addr(&self) -> u64 {
        self.ptr as u64
    }

    /// The local key.
    pub(crate) fn lkey(&self) -> u32 {
        // SAFETY: `mr` is live until drop.
        unsafe { (*self.mr).lkey }
    }

    /// The remote key.
    pub(crate) fn rkey(&self) -> u32 {
        // SAFETY: `mr` is live until drop.
        unsafe { (*self.mr).rkey }
    }

    /// `len` bytes at `offset`, read-only.
    ///
    /// The peer writes other parts of the region meanwhile; callers read only parts whose
    /// completion they have seen, which verbs orders before the completion.
    pub(crate) fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len, "registered range out of bounds");
        // SAFETY: in bounds (checked); the mapping lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }

    /// `len` bytes at `offset`, writable.
    pub(crate) fn slice_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.len, "registered range out of bounds");
        // SAFETY: in bounds; the exclusive borrow of `self` keeps other local views away.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: the queue pairs that could touch this memory are dropped first (fields
        // order in the channel structs); `mr` and the mapping are ours.
        unsafe {
            (self.dev.verbs.dereg_mr)(self.mr);
            let _ = rustix::mm::munmap(self.ptr.cast(), self.len);
        }
    }
}

/// A completion queue and the event channel that wakes a thread sleeping on it.
pub(crate) struct Cq {
    pub(crate) dev: Arc<Device>,
    pub(crate) cq: *mut verbs::ibv_cq,
    channel: *mut verbs::ibv_comp_channel,
    /// Notification requested and not yet delivered.
    armed: bool,
}

// SAFETY: owned objects; see `Device`.
unsafe impl Send for Cq {}

impl Cq {
    /// A queue of `depth` entries with a non-blocking event channel.
    pub(crate) fn new(dev: &Arc<Device>, depth: usize) -> Result<Self> {
        let v = dev.verbs;
        // SAFETY: the context is open for as long as `dev` lives.
        let channel = unsafe { (v.create_comp_channel)(dev.ctx) };
        if channel.is_null() {
            return Err(Error::io(
                format!("creating a completion channel on {}", dev.name),
                os_error(),
            ));
        }
        // SAFETY: `channel` was just created on this context.
        let cq =
            unsafe { (v.create_cq)(dev.ctx, depth as c_int, std::ptr::null_mut(), channel, 0) };
        if cq.is_null() {
            let e = os_error();
            // SAFETY: unused channel.
            unsafe { (v.destroy_comp_channel)(channel) };
            return Err(Error::io(
                format!("creating a completion queue of {depth} on {}", dev.name),
                e,
            ));
        }
        let this = Self {
            dev: dev.clone(),
            cq,
            channel,
            armed: false,
        };
        // SAFETY: the channel's fd stays open as long as the channel.
        let fd = unsafe { BorrowedFd::borrow_raw(this.fd()) };
        rustix::fs::fcntl_setfl(fd, rustix::fs::OFlags::NONBLOCK)
            .map_err(|e| Error::io("making the completion channel non-blocking", e.into()))?;
        Ok(this)
    }

    /// The event channel's descriptor: readable once a completion arrived after
    /// [`Cq::arm`].
    pub(crate) fn fd(&self) -> RawFd {
        // SAFETY: `channel` is live until drop.
        unsafe { (*self.channel).fd }
    }

    /// Up to `wc.len()` completions; the number filled.
    pub(crate) fn poll(&mut self, wc: &mut [verbs::ibv_wc]) -> Result<usize> {
        // SAFETY: `cq` was created on `dev.ctx`; `wc` has room for `wc.len()` entries.
        let n =
            unsafe { verbs::poll_cq(self.dev.ctx, self.cq, wc.len() as c_int, wc.as_mut_ptr()) };
        if n < 0 {
            return Err(Error::Io {
                what: format!("polling a completion queue on {}", self.dev.name),
                source: std::io::Error::from_raw_os_error(-n),
            });
        }
        Ok(n as usize)
    }

    /// Consumes delivered events (so the descriptor stops being readable). Free unless
    /// armed: events only come after [`Cq::arm`], so the polling fast path makes no system
    /// call.
    pub(crate) fn drain_events(&mut self) {
        while self.armed {
            let mut cq = std::ptr::null_mut();
            let mut ctx = std::ptr::null_mut();
            // SAFETY: the channel is non-blocking, so this returns -1 at once when empty.
            let rc = unsafe { (self.dev.verbs.get_cq_event)(self.channel, &mut cq, &mut ctx) };
            if rc != 0 {
                return;
            }
            // SAFETY: `cq` is the queue the event was for (ours); one event to ack.
            unsafe { (self.dev.verbs.ack_cq_events)(cq, 1) };
            self.armed = false;
        }
    }

    /// Asks for an event at the next completion, unless already asked. Returns `true` when
    /// it asked now: the caller polls once more, since completions that arrived before
    /// the request raise no event.
    pub(crate) fn arm(&mut self) -> Result<bool> {
        if self.armed {
            return Ok(false);
        }
        // SAFETY: `cq` belongs to `dev.ctx`.
        let rc = unsafe { verbs::req_notify_cq(self.dev.ctx, self.cq) };
        if rc != 0 {
            return Err(Error::Io {
                what: format!("arming a completion queue on {}", self.dev.name),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        self.armed = true;
        Ok(true)
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        self.drain_events();
        // SAFETY: every event was acked above; the queue pairs using this queue are dropped
        // before it (field order); both objects are ours.
        unsafe {
            (self.dev.verbs.destroy_cq)(self.cq);
            (self.dev.verbs.destroy_comp_channel)(self.channel);
        }
    }
}

/// What [`Qp::connect`] needs from the peer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QpRemote {
    pub qpn: u32,
    pub psn: u32,
    pub lid: u16,
    pub gid: verbs::ibv_gid,
}

/// How a queue pair reaches its peer (from [`super::device::Port`] and the settings).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathSettings {
    pub port: u8,
    /// `None` on InfiniBand (LID routing), the GID index on RoCE.
    pub gid_index: Option<u8>,
    pub mtu: u32,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub service_level: u8,
    pub traffic_class: u8,
}

/// A reliable-connected queue pair.
pub(crate) struct Qp {
    dev: Arc<Device>,
    pub(crate) qp: *mut verbs::ibv_qp,
    /// Our first packet sequence number.
    pub(crate) psn: u32,
}

// SAFETY: owned object; see `Device`.
unsafe impl Send for Qp {}

impl Qp {
    /// A queue pair on `cq` (both directions) with room for `send_wr` and `recv_wr`
    /// outstanding work requests, in state INIT on `port`.
    pub(crate) fn new(cq: &Cq, port: u8, send_wr: u32, recv_wr: u32) -> Result<Self> {
        let dev = &cq.dev;
        let mut init = verbs::ibv_qp_init_attr {
            qp_context: std::ptr::null_mut(),
            send_cq: cq.cq,
            recv_cq: cq.cq,
            srq: std::ptr::null_mut(),
            cap: verbs::ibv_qp_cap {
                max_send_wr: send_wr,
                max_recv_wr: recv_wr,
                max_send_sge: 1,
                max_recv_sge: 1,
                max_inline_data: 32,
            },
            qp_type: verbs::QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: `init` is fully initialised; `pd` and `cq` are live.
        let qp = unsafe { (dev.verbs.create_qp)(dev.pd, &mut init) };
        if qp.is_null() {
            return Err(Error::io(
                format!(
                    "creating a queue pair ({send_wr} send, {recv_wr} receive entries) on {}",
                    dev.name
                ),
                os_error(),
            ));
        }
        let psn = {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            u32::from_le_bytes(b) & 0x00ff_ffff
        };
        let this = Self {
            dev: dev.clone(),
            qp,
            psn,
        };
        let mut attr = verbs::ibv_qp_attr {
            qp_state: verbs::QPS_INIT,
            pkey_index: 0,
            port_num: port,
            qp_access_flags: verbs::ACCESS_REMOTE_WRITE as u32,
            ..Default::default()
        };
        this.modify(
            &mut attr,
            verbs::QP_STATE | verbs::QP_PKEY_INDEX | verbs::QP_PORT | verbs::QP_ACCESS_FLAGS,
            "INIT",
        )?;
        Ok(this)
    }

    /// The queue pair number the peer connects to.
    pub(crate) fn qpn(&self) -> u32 {
        // SAFETY: `qp` is live until drop.
        unsafe { (*self.qp).qp_num }
    }

    fn modify(&self, attr: &mut verbs::ibv_qp_attr, mask: c_int, state: &str) -> Result<()> {
        // SAFETY: `attr` is initialised; `qp` is live.
        let rc = unsafe { (self.dev.verbs.modify_qp)(self.qp, attr, mask) };
        if rc != 0 {
            return Err(Error::Io {
                what: format!(
                    "moving queue pair {} on {} to {state}",
                    self.qpn(),
                    self.dev.name
                ),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        Ok(())
    }

    /// INIT → RTR → RTS towards `remote`.
    pub(crate) fn connect(&self, remote: &QpRemote, path: &PathSettings) -> Result<()> {
        let mut ah = verbs::ibv_ah_attr {
            dlid: remote.lid,
            sl: path.service_level,
            port_num: path.port,
            ..Default::default()
        };
        if let Some(gid_index) = path.gid_index {
            ah.is_global = 1;
            ah.grh = verbs::ibv_global_route {
                dgid: remote.gid,
                flow_label: 0,
                sgid_index: gid_index,
                hop_limit: 255,
                traffic_class: path.traffic_class,
            };
        }
        let mut rtr = verbs::ibv_qp_attr {
            qp_state: verbs::QPS_RTR,
            path_mtu: path.mtu,
            dest_qp_num: remote.qpn,
            rq_psn: remote.psn,
            max_dest_rd_atomic: 1,
            min_rnr_timer: 12,
            ah_attr: ah,
            ..Default::default()
        };
        self.modify(
            &mut rtr,
            verbs::QP_STATE
                | verbs::QP_AV
                | verbs::QP_PATH_MTU
                | verbs::QP_DEST_QPN
                | verbs::QP_RQ_PSN
                | verbs::QP_MAX_DEST_RD_ATOMIC
                | verbs::QP_MIN_RNR_TIMER,
            "RTR",
        )?;
        let mut rts = verbs::ibv_qp_attr {
            qp_state: verbs::QPS_RTS,
            timeout: path.timeout,
            retry_cnt: path.retry_cnt,
            // 7: retry forever while the peer has no receive posted (it always has; a peer
            // that is gone shows as retry exhaustion instead).
            rnr_retry: 7,
            sq_psn: self.psn,
            max_rd_atomic: 1,
            ..Default::default()
        };
        self.modify(
            &mut rts,
            verbs::QP_STATE
                | verbs::QP_TIMEOUT
                | verbs::QP_RETRY_CNT
                | verbs::QP_RNR_RETRY
                | verbs::QP_SQ_PSN
                | verbs::QP_MAX_QP_RD_ATOMIC,
            "RTS",
        )
    }

    /// Posts a chain of send work requests.
    ///
    /// # Safety
    /// Every request's scatter list and remote range must stay valid until it completes.
    pub(crate) unsafe fn post_send(&self, wr: &mut verbs::ibv_send_wr) -> Result<()> {
        // SAFETY: the caller guarantees the memory; `qp` belongs to `dev.ctx`.
        let rc = unsafe { verbs::post_send(self.dev.ctx, self.qp, wr) };
        if rc != 0 {
            return Err(Error::Io {
                what: format!("posting to queue pair {} on {}", self.qpn(), self.dev.name),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        Ok(())
    }

    /// Posts one receive without a buffer (for RDMA writes with immediate data).
    pub(crate) fn post_empty_recv(&self, wr_id: u64) -> Result<()> {
        let mut wr = verbs::ibv_recv_wr {
            wr_id,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
        };
        // SAFETY: no scatter list to keep alive; `qp` belongs to `dev.ctx`.
        let rc = unsafe { verbs::post_recv(self.dev.ctx, self.qp, &mut wr) };
        if rc != 0 {
            return Err(Error::Io {
                what: format!("posting a receive on queue pair {}", self.qpn()),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
        Ok(())
    }
}

impl Drop for Qp {
    fn drop(&mut self) {
        // Error state first flushes outstanding work, so the peer's next write fails fast
        // (retry exhaustion) instead of landing in memory we are about to free.
        let mut attr = verbs::ibv_qp_attr {
            qp_state: verbs::QPS_ERR,
            ..Default::default()
        };
        // SAFETY: `qp` is ours and live; errors only mean it is already broken.
        unsafe {
            (self.dev.verbs.modify_qp)(self.qp, &mut attr, verbs::QP_STATE);
            (self.dev.verbs.destroy_qp)(self.qp);
        }
    }
}
