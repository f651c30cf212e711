//! A table of bad inputs to the Rust API and its configuration: each must give an error of
//! the right kind whose message names what was wrong; none may panic, hang or break the
//! communicator (argument errors leave it usable, which the end of each run checks).

use oxccl::{Communicator, Config, Error, ReduceOp, TransportChoice, UniqueId};
use std::collections::HashMap;
use std::time::Duration;

type Case = (
    &'static str,
    fn(&mut Communicator) -> oxccl::Result<()>,
    &'static str,
);

/// Calls with bad arguments on a 2-rank communicator (both ranks run every case: argument
/// errors are found locally, before anything is sent). Each is wrong on every rank: a call
/// wrong on one rank only (a root's send buffer, which other ranks do not read) fails there
/// and leaves the others waiting until their deadline or `OXCCL_CHECK` catches it.
const CALLS: &[Case] = &[
    (
        "all_reduce lengths differ",
        |c| c.all_reduce(&[1f32; 4], &mut [0f32; 3], ReduceOp::Sum),
        "4",
    ),
    (
        "all_gather output too short",
        |c| c.all_gather(&[1f32; 4], &mut [0f32; 7]),
        "receive",
    ),
    (
        "all_gather_in_place not 2 blocks",
        |c| c.all_gather_in_place(&mut [0f32; 5]),
        "buffer",
    ),
    (
        "reduce_scatter input not 2 blocks",
        |c| c.reduce_scatter(&[1f32; 5], &mut [0f32; 2], ReduceOp::Sum),
        "5",
    ),
    (
        "reduce_scatter_in_place odd",
        |c| c.reduce_scatter_in_place(&mut [0f32; 3], ReduceOp::Max),
        "3",
    ),
    (
        "broadcast root out of range",
        |c| c.broadcast_in_place(&mut [0u8; 4], 2),
        "root",
    ),
    (
        "reduce_scatter output not a block",
        |c| c.reduce_scatter(&[1f32; 4], &mut [0f32; 3], ReduceOp::Sum),
        "3",
    ),
    (
        "reduce root out of range",
        |c| c.reduce(&[1i32; 4], &mut [0i32; 4], ReduceOp::Sum, 7),
        "root",
    ),
    (
        "reduce_in_place root out of range",
        |c| c.reduce_in_place(&mut [1i32; 4], ReduceOp::Min, u32::MAX),
        "root",
    ),
    (
        "gather root out of range",
        |c| c.gather(&[1f64; 2], &mut [0f64; 4], 2),
        "root",
    ),
    (
        "gather output too short",
        |c| c.gather(&[1f64; 2], &mut [0f64; 3], 0),
        "3",
    ),
    (
        "gather_in_place not 2 blocks",
        |c| c.gather_in_place(&mut [0f64; 3], 0),
        "3",
    ),
    (
        "scatter input not 2 blocks",
        |c| c.scatter(&[1u64; 3], &mut [0u64; 2], 0),
        "3",
    ),
    (
        "scatter root out of range",
        |c| c.scatter(&[1u64; 4], &mut [0u64; 2], 9),
        "root",
    ),
    (
        "scatter_in_place root out of range",
        |c| c.scatter_in_place(&mut [1u64; 4], 2),
        "root",
    ),
    (
        "all_to_all lengths differ",
        |c| c.all_to_all(&[1u8; 4], &mut [0u8; 6]),
        "6",
    ),
    (
        "all_to_all input not 2 blocks",
        |c| c.all_to_all(&[1u8; 5], &mut [0u8; 5]),
        "5",
    ),
    (
        "all_to_all_in_place not 2 blocks",
        |c| c.all_to_all_in_place(&mut [1u8; 3]),
        "3",
    ),
    ("send peer out of range", |c| c.send(&[1f32], 2), "peer"),
    ("recv peer out of range", |c| c.recv(&mut [0f32], 5), "peer"),
    (
        "send to self without a receive",
        |c| c.send(&[1f32], c.rank()),
        "self",
    ),
    (
        "group: self send and receive lengths differ",
        |c| {
            let (a, mut b) = ([1f32; 3], [0f32; 4]);
            let r = c.rank();
            let mut g = c.group();
            g.send(&a, r)?;
            g.recv(&mut b, r)?;
            g.run()
        },
        "self",
    ),
    (
        "shrink excluding this rank",
        |c| c.shrink(&[c.rank()]).map(drop),
        "exclude",
    ),
    (
        "shrink rank out of range",
        |c| c.shrink(&[2]).map(drop),
        "out of range",
    ),
    (
        "split color above i32::MAX",
        |c| c.split(Some(u32::MAX), 0).map(drop),
        "color",
    ),
];

#[test]
fn bad_calls_give_argument_errors_and_leave_the_communicator_usable() {
    assert!(CALLS.len() >= 20);
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let mut cfg = Config::default();
                cfg.timeout = Duration::from_secs(30);
                cfg.transport = TransportChoice::Tcp;
                let mut c = Communicator::init(id, 2, r, cfg).unwrap();
                let mut seen = Vec::new();
                for (what, call, names) in CALLS {
                    match call(&mut c) {
                        Err(e @ Error::InvalidArgument { .. }) => {
                            let msg = e.to_string();
                            assert!(
                                msg.contains(names),
                                "{what}: {msg:?} does not name {names:?}"
                            );
                            seen.push(msg);
                        }
                        other => panic!("{what}: expected an argument error, got {other:?}"),
                    }
                }
                let mut v = vec![1u32; 100];
                c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                assert_eq!(v[99], 2, "the communicator is still usable");
                seen
            })
        })
        .collect();
    for r in ranks {
        assert_eq!(r.join().unwrap().len(), CALLS.len());
    }
}

/// Bad settings: `Config::from_lookup` names the variable and the value.
#[test]
fn bad_settings_name_the_variable() {
    let cases = [
        ("OXCCL_TIMEOUT", "soon"),
        ("OXCCL_TIMEOUT", "-1"),
        ("OXCCL_TRANSPORT", "carrier-pigeon"),
        ("OXCCL_NCHANNELS", "0"),
        ("OXCCL_NCHANNELS", "65"),
        ("OXCCL_SLOT_SIZE", "100"),
        ("OXCCL_SLOT_SIZE", "12Q"),
        ("OXCCL_NSLOTS", "1"),
        ("OXCCL_ALGO", "teleport"),
        ("OXCCL_SHM_WINDOW", "1K"),
        ("OXCCL_ZERO_COPY", "maybe"),
        ("OXCCL_CHECK", "2"),
        ("OXCCL_SOCKET_ADDR", "not-an-ip"),
        ("OXCCL_SPIN", "lots"),
        ("OXCCL_TUNING_FILE", "/nonexistent/oxccl-tuning.json"),
        ("OXCCL_IB_HCA", "mlx5_0:zero"),
        ("OXCCL_IB_HCA", "^"),
        ("OXCCL_IB_GID_INDEX", "300"),
        ("OXCCL_IB_TIMEOUT", "32"),
        ("OXCCL_IB_RETRY_CNT", "8"),
        ("OXCCL_IB_QPS_PER_CONNECTION", "0"),
        ("OXCCL_IB_SL", "16"),
        ("OXCCL_IB_DISABLE", "sometimes"),
    ];
    for (knob, value) in cases {
        let env: HashMap<&str, &str> = [(knob, value)].into();
        let e = Config::from_lookup(|k| env.get(k).map(|v| v.to_string()))
            .expect_err(&format!("{knob}={value} was accepted"));
        let msg = e.to_string();
        assert!(msg.contains(knob), "{knob}={value}: {msg}");
    }
}

/// Bad creation arguments and ids.
#[test]
fn bad_creation_arguments() {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(5)).unwrap();
    let cfg = Config::default();
    let e = Communicator::init(id, 2, 2, cfg.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("rank 2 is out of range for 2 ranks"), "{e}");
    let e = Communicator::init(id, 0, 0, cfg.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nranks"), "{e}");
    let e = UniqueId::from_bytes(&[0u8; 12]).err().unwrap().to_string();
    assert!(e.contains("128 bytes"), "{e}");
    let e = UniqueId::from_bytes(&[7u8; 128]).err().unwrap().to_string();
    assert!(e.contains("not an oxccl unique id"), "{e}");
    let mut bad = Config::default();
    bad.nchannels = 0;
    let e = Communicator::init(id, 1, 0, bad).err().unwrap().to_string();
    assert!(e.contains("OXCCL_NCHANNELS"), "{e}");
}

/// Verbs forced where a rank has no usable RDMA port (this machine and CI have none): every
/// rank fails at creation naming the rank and the reason. Where a port exists (the soft-RoCE
/// guest), the communicator works instead.
#[test]
fn forced_verbs_without_a_port_name_the_rank_and_the_reason() {
    let has_port = std::fs::read_dir("/sys/class/infiniband").is_ok_and(|mut d| d.next().is_some());
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let ranks: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let mut cfg = Config::default();
                cfg.timeout = Duration::from_secs(30);
                cfg.transport = TransportChoice::Ib;
                Communicator::init(id, 2, r, cfg).map(|mut c| {
                    let mut v = vec![1u32; 1000];
                    c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                    v[999]
                })
            })
        })
        .collect();
    for r in ranks {
        match (r.join().unwrap(), has_port) {
            (Ok(v), true) => assert_eq!(v, 2),
            (Err(e), false) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("ib was forced but rank 0 cannot use verbs")
                        && msg.contains("no IB device"),
                    "{msg}"
                );
            }
            (other, _) => panic!("has a port: {has_port}, got {other:?}"),
        }
    }
    // Disabling verbs while forcing them is a contradiction, named at once.
    let env: HashMap<&str, &str> = [("OXCCL_TRANSPORT", "ib"), ("OXCCL_IB_DISABLE", "1")].into();
    let e = Config::from_lookup(|k| env.get(k).map(|v| v.to_string())).unwrap_err();
    assert!(e.to_string().contains("OXCCL_IB_DISABLE"), "{e}");
}
