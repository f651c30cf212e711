//! The part of libibverbs oxccl calls, declared here and loaded at run time.
//!
//! Why not a binding crate: the maintained ones (`rdma-sys`, `ibverbs-sys`) run bindgen at
//! build time and link libibverbs, so building oxccl would need rdma-core's headers and every
//! program using it would need libibverbs.so.1 to start. oxccl opens the library with
//! `dlopen` when a communicator first asks for verbs (as NCCL does), so a machine without
//! rdma-core builds and runs everything else and is told "no IB device".
//!
//! The structures below are declared by hand, only as far as oxccl reads or fills them, with
//! the layout of rdma-core's `<infiniband/verbs.h>` on 64-bit Linux (a stable ABI; the test at
//! the end pins every size and offset oxccl depends on, as the C compiler reports them). `ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq` and `ibv_req_notify_cq`
//! are inline functions in the header that call through the context's operation table, so
//! they are reached the same way here.

#![allow(non_camel_case_types)]

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::OnceLock;

use crate::{Error, Result};

/// `struct ibv_device` (opaque).
#[repr(C)]
pub(crate) struct ibv_device {
    _opaque: [u8; 0],
}

/// `struct ibv_pd` (opaque).
#[repr(C)]
pub(crate) struct ibv_pd {
    _opaque: [u8; 0],
}

/// `struct ibv_cq` (opaque: its first field is the context, which callers keep themselves).
#[repr(C)]
pub(crate) struct ibv_cq {
    _opaque: [u8; 0],
}

type PollCq = unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int;
type ReqNotifyCq = unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int;
type PostSend = unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int;
type PostRecv = unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int;

/// `struct ibv_context`, up to the operation table (32 pointers after `device`).
#[repr(C)]
pub(crate) struct ibv_context {
    pub device: *mut ibv_device,
    /// `struct ibv_context_ops`: slot 11 `poll_cq`, 12 `req_notify_cq`, 25 `post_send`,
    /// 26 `post_recv`; the rest are not called from here.
    pub ops: [*const c_void; 32],
}

/// Index of `poll_cq` in the operation table.
const OP_POLL_CQ: usize = 11;
/// Index of `req_notify_cq`.
const OP_REQ_NOTIFY_CQ: usize = 12;
/// Index of `post_send`.
const OP_POST_SEND: usize = 25;
/// Index of `post_recv`.
const OP_POST_RECV: usize = 26;

/// `struct ibv_comp_channel`.
#[repr(C)]
pub(crate) struct ibv_comp_channel {
    pub context: *mut ibv_context,
    pub fd: c_int,
    pub refcnt: c_int,
}

/// `struct ibv_mr`.
#[repr(C)]
pub(crate) struct ibv_mr {
    pub context: *mut ibv_context,
    pub pd: *mut ibv_pd,
    pub addr: *mut c_void,
    pub length: usize,
    pub handle: u32,
    pub lkey: u32,
    pub rkey: u32,
}

/// `struct ibv_qp`, up to `state` (the rest is the library's).
#[repr(C)]
pub(crate) struct ibv_qp {
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub handle: u32,
    pub qp_num: u32,
    pub state: u32,
}

/// `union ibv_gid`: 16 bytes, network order (8-byte aligned: the union has a 64-bit view).
#[repr(C, align(8))]
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) struct ibv_gid {
    pub raw: [u8; 16],
}

/// `struct ibv_port_attr` as the exported `ibv_query_port` fills it (the 1.1 layout; later
/// fields stay zero).
#[repr(C)]
#[derive(Default)]
pub(crate) struct ibv_port_attr {
    pub state: u32,
    pub max_mtu: u32,
    pub active_mtu: u32,
    pub gid_tbl_len: c_int,
    pub port_cap_flags: u32,
    pub max_msg_sz: u32,
    pub bad_pkey_cntr: u32,
    pub qkey_viol_cntr: u32,
    pub pkey_tbl_len: u16,
    pub lid: u16,
    pub sm_lid: u16,
    pub lmc: u8,
    pub max_vl_num: u8,
    pub sm_sl: u8,
    pub subnet_timeout: u8,
    pub init_type_reply: u8,
    pub active_width: u8,
    pub active_speed: u8,
    pub phys_state: u8,
    pub link_layer: u8,
    pub flags: u8,
    pub port_cap_flags2: u16,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_qp_cap {
    pub max_send_wr: u32,
    pub max_recv_wr: u32,
    pub max_send_sge: u32,
    pub max_recv_sge: u32,
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub(crate) struct ibv_qp_init_attr {
    pub qp_context: *mut c_void,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut c_void,
    pub cap: ibv_qp_cap,
    pub qp_type: u32,
    pub sq_sig_all: c_int,
}

/// `struct ibv_global_route`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_global_route {
    pub dgid: ibv_gid,
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

/// `struct ibv_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_ah_attr {
    pub grh: ibv_global_route,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
}

/// `struct ibv_qp_attr`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_qp_attr {
    pub qp_state: u32,
    pub cur_qp_state: u32,
    pub path_mtu: u32,
    pub path_mig_state: u32,
    pub qkey: u32,
    pub rq_psn: u32,
    pub sq_psn: u32,
    pub dest_qp_num: u32,
    pub qp_access_flags: c_uint,
    pub cap: ibv_qp_cap,
    pub ah_attr: ibv_ah_attr,
    pub alt_ah_attr: ibv_ah_attr,
    pub pkey_index: u16,
    pub alt_pkey_index: u16,
    pub en_sqd_async_notify: u8,
    pub sq_draining: u8,
    pub max_rd_atomic: u8,
    pub max_dest_rd_atomic: u8,
    pub min_rnr_timer: u8,
    pub port_num: u8,
    pub timeout: u8,
    pub retry_cnt: u8,
    pub rnr_retry: u8,
    pub alt_port_num: u8,
    pub alt_timeout: u8,
    pub rate_limit: u32,
}

/// `struct ibv_sge`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_sge {
    pub addr: u64,
    pub length: u32,
    pub lkey: u32,
}

/// `struct ibv_send_wr` with the `rdma` member of its `wr` union (the unions that follow are
/// padding here).
#[repr(C)]
pub(crate) struct ibv_send_wr {
    pub wr_id: u64,
    pub next: *mut ibv_send_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
    pub opcode: u32,
    pub send_flags: c_uint,
    /// Network byte order.
    pub imm_data: u32,
    pub remote_addr: u64,
    pub rkey: u32,
    pub(crate) _wr_rest: [u8; 20],
    pub(crate) _tail: [u64; 7],
}

impl Default for ibv_send_wr {
    fn default() -> Self {
        Self {
            wr_id: 0,
            next: std::ptr::null_mut(),
            sg_list: std::ptr::null_mut(),
            num_sge: 0,
            opcode: 0,
            send_flags: 0,
            imm_data: 0,
            remote_addr: 0,
            rkey: 0,
            _wr_rest: [0; 20],
            _tail: [0; 7],
        }
    }
}

/// `struct ibv_recv_wr`.
#[repr(C)]
pub(crate) struct ibv_recv_wr {
    pub wr_id: u64,
    pub next: *mut ibv_recv_wr,
    pub sg_list: *mut ibv_sge,
    pub num_sge: c_int,
}

/// `struct ibv_wc`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct ibv_wc {
    pub wr_id: u64,
    pub status: u32,
    pub opcode: u32,
    pub vendor_err: u32,
    pub byte_len: u32,
    /// Network byte order.
    pub imm_data: u32,
    pub qp_num: u32,
    pub src_qp: u32,
    pub wc_flags: c_uint,
    pub pkey_index: u16,
    pub slid: u16,
    pub sl: u8,
    pub dlid_path_bits: u8,
}

// Values of verbs.h's enums that oxccl uses.
/// `IBV_PORT_ACTIVE`.
pub(crate) const PORT_ACTIVE: u32 = 4;
/// `IBV_LINK_LAYER_INFINIBAND`.
pub(crate) const LINK_LAYER_INFINIBAND: u8 = 1;
/// `IBV_LINK_LAYER_ETHERNET`.
pub(crate) const LINK_LAYER_ETHERNET: u8 = 2;
/// `IBV_QPT_RC`.
pub(crate) const QPT_RC: u32 = 2;
/// `IBV_ACCESS_LOCAL_WRITE`.
pub(crate) const ACCESS_LOCAL_WRITE: c_int = 1;
/// `IBV_ACCESS_REMOTE_WRITE`.
pub(crate) const ACCESS_REMOTE_WRITE: c_int = 2;
/// `IBV_QPS_INIT`, `IBV_QPS_RTR`, `IBV_QPS_RTS`, `IBV_QPS_ERR`.
pub(crate) const QPS_INIT: u32 = 1;
pub(crate) const QPS_RTR: u32 = 2;
pub(crate) const QPS_RTS: u32 = 3;
pub(crate) const QPS_ERR: u32 = 6;
// `enum ibv_qp_attr_mask` bits.
pub(crate) const QP_STATE: c_int = 1;
pub(crate) const QP_ACCESS_FLAGS: c_int = 8;
pub(crate) const QP_PKEY_INDEX: c_int = 16;
pub(crate) const QP_PORT: c_int = 32;
pub(crate) const QP_AV: c_int = 128;
pub(crate) const QP_PATH_MTU: c_int = 256;
pub(crate) const QP_TIMEOUT: c_int = 512;
pub(crate) const QP_RETRY_CNT: c_int = 1024;
pub(crate) const QP_RNR_RETRY: c_int = 2048;
pub(crate) const QP_RQ_PSN: c_int = 4096;
pub(crate) const QP_MAX_QP_RD_ATOMIC: c_int = 8192;
pub(crate) const QP_MIN_RNR_TIMER: c_int = 32768;
pub(crate) const QP_SQ_PSN: c_int = 65536;
pub(crate) const QP_MAX_DEST_RD_ATOMIC: c_int = 131072;
pub(crate) const QP_DEST_QPN: c_int = 1048576;
/// `IBV_WR_RDMA_WRITE`, `IBV_WR_RDMA_WRITE_WITH_IMM`.
pub(crate) const WR_RDMA_WRITE: u32 = 0;
pub(crate) const WR_RDMA_WRITE_WITH_IMM: u32 = 1;
/// `IBV_SEND_SIGNALED`, `IBV_SEND_INLINE`.
pub(crate) const SEND_SIGNALED: c_uint = 2;
pub(crate) const SEND_INLINE: c_uint = 8;

/// The functions oxccl calls, resolved once from libibverbs.so.1.
pub(crate) struct Verbs {
    pub get_device_list: unsafe extern "C" fn(*mut c_int) -> *mut *mut ibv_device,
    pub free_device_list: unsafe extern "C" fn(*mut *mut ibv_device),
    pub get_device_name: unsafe extern "C" fn(*mut ibv_device) -> *const c_char,
    pub open_device: unsafe extern "C" fn(*mut ibv_device) -> *mut ibv_context,
    pub close_device: unsafe extern "C" fn(*mut ibv_context) -> c_int,
    pub query_port: unsafe extern "C" fn(*mut ibv_context, u8, *mut ibv_port_attr) -> c_int,
    pub query_gid: unsafe extern "C" fn(*mut ibv_context, u8, c_int, *mut ibv_gid) -> c_int,
    pub alloc_pd: unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_pd,
    pub dealloc_pd: unsafe extern "C" fn(*mut ibv_pd) -> c_int,
    pub reg_mr: unsafe extern "C" fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr,
    pub dereg_mr: unsafe extern "C" fn(*mut ibv_mr) -> c_int,
    pub create_comp_channel: unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_comp_channel,
    pub destroy_comp_channel: unsafe extern "C" fn(*mut ibv_comp_channel) -> c_int,
    pub create_cq: unsafe extern "C" fn(
        *mut ibv_context,
        c_int,
        *mut c_void,
        *mut ibv_comp_channel,
        c_int,
    ) -> *mut ibv_cq,
    pub destroy_cq: unsafe extern "C" fn(*mut ibv_cq) -> c_int,
    pub get_cq_event:
        unsafe extern "C" fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int,
    pub ack_cq_events: unsafe extern "C" fn(*mut ibv_cq, c_uint),
    pub create_qp: unsafe extern "C" fn(*mut ibv_pd, *mut ibv_qp_init_attr) -> *mut ibv_qp,
    pub modify_qp: unsafe extern "C" fn(*mut ibv_qp, *mut ibv_qp_attr, c_int) -> c_int,
    pub destroy_qp: unsafe extern "C" fn(*mut ibv_qp) -> c_int,
    pub wc_status_str: unsafe extern "C" fn(u32) -> *const c_char,
    /// Keeps the library mapped while the pointers above are used.
    _lib: libloading::Library,
}

/// The library names tried, newest ABI first.
const LIBRARY_NAMES: [&str; 2] = ["libibverbs.so.1", "libibverbs.so"];

impl Verbs {
    /// libibverbs, loaded on first use; the error says why it could not be (kept, so a
    /// machine without rdma-core tries once).
    pub(crate) fn get() -> Result<&'static Verbs> {
        static VERBS: OnceLock<std::result::Result<Verbs, String>> = OnceLock::new();
        VERBS
            .get_or_init(Self::load)
            .as_ref()
            .map_err(|why| Error::Config(why.clone()))
    }

    fn load() -> std::result::Result<Verbs, String> {
        let mut tried = Vec::new();
        for name in LIBRARY_NAMES {
            // SAFETY: loading libibverbs runs its constructors, which only set up its own
            // state (provider list, fork protection off); it is a plain C library.
            match unsafe { libloading::Library::new(name) } {
                Ok(lib) => return Self::resolve(lib).map_err(|e| format!("{name}: {e}")),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        Err(format!(
            "no IB device: libibverbs is not installed ({}); install rdma-core's libibverbs1 \
             and a provider (ibverbs-providers) to use InfiniBand/RoCE",
            tried.join("; ")
        ))
    }

    fn resolve(lib: libloading::Library) -> std::result::Result<Verbs, libloading::Error> {
        macro_rules! sym {
            ($name:literal) => {
                // SAFETY: the symbol is the rdma-core function of that name; the field's
                // type spells the C prototype of `verbs.h`, and `_lib` keeps the library
                // loaded as long as the pointer lives in this struct.
                unsafe { *lib.get(concat!($name, "\0").as_bytes())? }
            };
        }
        Ok(Verbs {
            get_device_list: sym!("ibv_get_device_list"),
            free_device_list: sym!("ibv_free_device_list"),
            get_device_name: sym!("ibv_get_device_name"),
            open_device: sym!("ibv_open_device"),
            close_device: sym!("ibv_close_device"),
            query_port: sym!("ibv_query_port"),
            query_gid: sym!("ibv_query_gid"),
            alloc_pd: sym!("ibv_alloc_pd"),
            dealloc_pd: sym!("ibv_dealloc_pd"),
            reg_mr: sym!("ibv_reg_mr"),
            dereg_mr: sym!("ibv_dereg_mr"),
            create_comp_channel: sym!("ibv_create_comp_channel"),
            destroy_comp_channel: sym!("ibv_destroy_comp_channel"),
            create_cq: sym!("ibv_create_cq"),
            destroy_cq: sym!("ibv_destroy_cq"),
            get_cq_event: sym!("ibv_get_cq_event"),
            ack_cq_events: sym!("ibv_ack_cq_events"),
            create_qp: sym!("ibv_create_qp"),
            modify_qp: sym!("ibv_modify_qp"),
            destroy_qp: sym!("ibv_destroy_qp"),
            wc_status_str: sym!("ibv_wc_status_str"),
            _lib: lib,
        })
    }

    /// The name of a completion status (`transport retry counter exceeded`).
    pub(crate) fn status_name(&self, status: u32) -> String {
        // SAFETY: ibv_wc_status_str returns a pointer to a static string for any value
        // (an "unknown" one for values it does not know), never null in rdma-core; the null
        // check covers other implementations.
        unsafe {
            let s = (self.wc_status_str)(status);
            if s.is_null() {
                format!("status {status}")
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        }
    }
}

/// `ibv_poll_cq`: the context's `poll_cq` operation.
///
/// # Safety
/// `ctx` must be the live context `cq` was created on; `wc` must have room for `n` entries.
pub(crate) unsafe fn poll_cq(
    ctx: *mut ibv_context,
    cq: *mut ibv_cq,
    n: c_int,
    wc: *mut ibv_wc,
) -> c_int {
    // SAFETY: the caller guarantees `ctx` is live; slot OP_POLL_CQ of its operation table
    // holds the provider's poll_cq (the header's inline ibv_poll_cq calls the same).
    unsafe {
        let f: PollCq = std::mem::transmute((*ctx).ops[OP_POLL_CQ]);
        f(cq, n, wc)
    }
}

/// `ibv_req_notify_cq`.
///
/// # Safety
/// As [`poll_cq`].
pub(crate) unsafe fn req_notify_cq(ctx: *mut ibv_context, cq: *mut ibv_cq) -> c_int {
    // SAFETY: as in `poll_cq`, slot OP_REQ_NOTIFY_CQ.
    unsafe {
        let f: ReqNotifyCq = std::mem::transmute((*ctx).ops[OP_REQ_NOTIFY_CQ]);
        f(cq, 0)
    }
}

/// `ibv_post_send`.
///
/// # Safety
/// `ctx` must be the live context of `qp`; `wr` a valid chain whose memory stays valid until
/// the work completes.
pub(crate) unsafe fn post_send(
    ctx: *mut ibv_context,
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
) -> c_int {
    let mut bad: *mut ibv_send_wr = std::ptr::null_mut();
    // SAFETY: as in `poll_cq`, slot OP_POST_SEND.
    unsafe {
        let f: PostSend = std::mem::transmute((*ctx).ops[OP_POST_SEND]);
        f(qp, wr, &mut bad)
    }
}

/// `ibv_post_recv`.
///
/// # Safety
/// As [`post_send`].
pub(crate) unsafe fn post_recv(
    ctx: *mut ibv_context,
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
) -> c_int {
    let mut bad: *mut ibv_recv_wr = std::ptr::null_mut();
    // SAFETY: as in `poll_cq`, slot OP_POST_RECV.
    unsafe {
        let f: PostRecv = std::mem::transmute((*ctx).ops[OP_POST_RECV]);
        f(qp, wr, &mut bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The layout of rdma-core 44's verbs.h on x86-64 (from its header), so a careless edit
    /// of a declaration fails here even where libibverbs-dev is absent.
    #[test]
    fn declarations_match_the_c_layout() {
        assert_eq!(offset_of!(ibv_context, ops), 8);
        assert_eq!(offset_of!(ibv_context, ops) + 8 * OP_POLL_CQ, 96);
        assert_eq!(offset_of!(ibv_context, ops) + 8 * OP_REQ_NOTIFY_CQ, 104);
        assert_eq!(offset_of!(ibv_context, ops) + 8 * OP_POST_SEND, 208);
        assert_eq!(offset_of!(ibv_context, ops) + 8 * OP_POST_RECV, 216);
        assert_eq!(size_of::<ibv_port_attr>(), 52);
        assert_eq!(offset_of!(ibv_port_attr, lid), 34);
        assert_eq!(offset_of!(ibv_port_attr, link_layer), 46);
        assert_eq!(offset_of!(ibv_mr, lkey), 36);
        assert_eq!(offset_of!(ibv_mr, rkey), 40);
        assert_eq!(offset_of!(ibv_comp_channel, fd), 8);
        assert_eq!(offset_of!(ibv_qp, qp_num), 52);
        assert_eq!(size_of::<ibv_qp_init_attr>(), 64);
        assert_eq!(offset_of!(ibv_qp_init_attr, cap), 32);
        assert_eq!(offset_of!(ibv_qp_init_attr, qp_type), 52);
        assert_eq!(offset_of!(ibv_qp_init_attr, sq_sig_all), 56);
        assert_eq!(size_of::<ibv_qp_attr>(), 144);
        assert_eq!(offset_of!(ibv_qp_attr, path_mtu), 8);
        assert_eq!(offset_of!(ibv_qp_attr, dest_qp_num), 28);
        assert_eq!(offset_of!(ibv_qp_attr, cap), 36);
        assert_eq!(offset_of!(ibv_qp_attr, ah_attr), 56);
        assert_eq!(offset_of!(ibv_qp_attr, alt_ah_attr), 88);
        assert_eq!(offset_of!(ibv_qp_attr, pkey_index), 120);
        assert_eq!(offset_of!(ibv_qp_attr, max_rd_atomic), 126);
        assert_eq!(offset_of!(ibv_qp_attr, min_rnr_timer), 128);
        assert_eq!(offset_of!(ibv_qp_attr, timeout), 130);
        assert_eq!(offset_of!(ibv_qp_attr, rnr_retry), 132);
        assert_eq!(offset_of!(ibv_qp_attr, rate_limit), 136);
        assert_eq!(size_of::<ibv_ah_attr>(), 32);
        assert_eq!(offset_of!(ibv_ah_attr, dlid), 24);
        assert_eq!(offset_of!(ibv_ah_attr, is_global), 29);
        assert_eq!(offset_of!(ibv_ah_attr, port_num), 30);
        assert_eq!(size_of::<ibv_global_route>(), 24);
        assert_eq!(offset_of!(ibv_global_route, sgid_index), 20);
        assert_eq!(size_of::<ibv_send_wr>(), 128);
        assert_eq!(offset_of!(ibv_send_wr, num_sge), 24);
        assert_eq!(offset_of!(ibv_send_wr, opcode), 28);
        assert_eq!(offset_of!(ibv_send_wr, imm_data), 36);
        assert_eq!(offset_of!(ibv_send_wr, remote_addr), 40);
        assert_eq!(offset_of!(ibv_send_wr, rkey), 48);
        assert_eq!(size_of::<ibv_recv_wr>(), 32);
        assert_eq!(size_of::<ibv_sge>(), 16);
        assert_eq!(size_of::<ibv_wc>(), 48);
        assert_eq!(offset_of!(ibv_wc, byte_len), 20);
        assert_eq!(offset_of!(ibv_wc, imm_data), 24);
        assert_eq!(offset_of!(ibv_wc, qp_num), 28);
        assert_eq!(offset_of!(ibv_wc, wc_flags), 36);
    }
}
