//! Communicator behaviour with ranks as threads of one process (real sockets, real shared
//! memory): groups, non-blocking handles, deadlines, abort, and argument and bootstrap errors.

use oxccl::{Communicator, Config, Error, ReduceOp, TransportChoice, UniqueId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn config(timeout_s: f64, transport: TransportChoice) -> Config {
    let mut c = Config::default();
    c.timeout = Duration::from_secs_f64(timeout_s);
    c.transport = transport;
    c
}

/// Runs `f` on every rank of an `n`-rank communicator, each rank in its own thread.
fn job<R: Send + 'static>(
    n: u32,
    cfg: Config,
    f: impl Fn(&mut Communicator) -> R + Send + Sync + Clone + 'static,
) -> Vec<R> {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), cfg.timeout).unwrap();
    let handles: Vec<_> = (0..n)
        .map(|r| {
            let (f, cfg) = (f.clone(), cfg.clone());
            std::thread::spawn(move || {
                let mut c = Communicator::init(id, n, r, cfg).expect("init");
                f(&mut c)
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("rank thread"))
        .collect()
}

#[test]
fn group_of_ring_sends_does_not_deadlock_with_large_messages() {
    for transport in [TransportChoice::Shm, TransportChoice::Tcp] {
        let out = job(3, config(60.0, transport), |c| {
            let (r, n) = (c.rank(), c.size());
            let mine = vec![r as u64; 3 << 20];
            let mut a = vec![0u64; 3 << 20];
            let mut b = vec![0u64; 3 << 20];
            let mut g = c.group();
            // Both directions at once: each send far exceeds the FIFO.
            g.send(&mine, (r + 1) % n).unwrap();
            g.send(&mine, (r + n - 1) % n).unwrap();
            g.recv(&mut a, (r + n - 1) % n).unwrap();
            g.recv(&mut b, (r + 1) % n).unwrap();
            g.run().unwrap();
            (a[0], *a.last().unwrap(), b[0], r)
        });
        for (a0, alast, b0, r) in out {
            assert_eq!((a0, alast), (((r + 2) % 3) as u64, ((r + 2) % 3) as u64));
            assert_eq!(b0, ((r + 1) % 3) as u64);
        }
    }
}

#[test]
fn pending_handle_completes_through_test() {
    let out = job(2, config(60.0, TransportChoice::Auto), |c| {
        let send = vec![c.rank() as f32 + 1.0; 100_000];
        let mut recv = vec![0f32; 100_000];
        let mut g = c.group();
        g.all_reduce(&send, &mut recv, ReduceOp::Sum).unwrap();
        let mut p = g.launch().unwrap();
        let mut polls = 0u64;
        while !p.test().unwrap() {
            polls += 1;
        }
        drop(p);
        (recv[0], recv[99_999], polls)
    });
    for (a, b, _) in out {
        assert_eq!((a, b), (3.0, 3.0));
    }
}

/// Set once rank 0 of the timeout test has seen its errors, so rank 1 may leave.
static RANK0_DONE: AtomicBool = AtomicBool::new(false);

#[test]
fn missing_rank_gives_a_timeout_naming_the_peer_and_step() {
    let out = job(2, config(1.0, TransportChoice::Shm), |c| {
        if c.rank() == 1 {
            // Rank 1 skips the collective but stays alive until rank 0 has given up.
            while !RANK0_DONE.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(10));
            }
            return String::new();
        }
        let mut v = vec![1f32; 1000];
        let e = c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap_err();
        let after = c.barrier().unwrap_err();
        RANK0_DONE.store(true, Ordering::SeqCst);
        format!("{e}|{after}")
    });
    let msg = &out[0];
    assert!(
        msg.contains("made no progress") && msg.contains("rank 1"),
        "{msg}"
    );
    assert!(msg.contains("step"), "{msg}");
    assert!(msg.contains("unusable after an earlier failure"), "{msg}");
}

#[test]
fn abort_from_another_thread_ends_a_wait() {
    let out = job(2, config(60.0, TransportChoice::Tcp), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(800));
            return String::from("idle");
        }
        let h = c.abort_handle();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            h.abort();
        });
        let mut v = vec![0u8; 10];
        let e = c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap_err();
        t.join().unwrap();
        e.to_string()
    });
    assert!(out[0].contains("aborted"), "{}", out[0]);
}

#[test]
fn ranks_that_disagree_on_the_count_get_a_protocol_error() {
    let out = job(2, config(10.0, TransportChoice::Auto), |c| {
        let n = if c.rank() == 0 { 1000 } else { 1200 };
        let mut v = vec![1i32; n];
        c.all_reduce_in_place(&mut v, ReduceOp::Sum)
            .err()
            .map(|e| e.to_string())
    });
    // One rank notices the wrong length; the other may instead see it close the connection.
    assert!(
        out.iter().flatten().any(|e| e.contains("disagree")),
        "{out:?}"
    );
}

#[test]
fn unreachable_root_names_the_address_within_the_deadline() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let id = UniqueId {
        root: addr,
        secret: oxccl::bootstrap::Secret([3; 32]),
    };
    let start = Instant::now();
    let e = Communicator::init(id, 2, 1, config(1.0, TransportChoice::Auto)).unwrap_err();
    assert!(matches!(e, Error::Bootstrap { .. }), "{e}");
    assert!(e.to_string().contains(&addr.to_string()), "{e}");
    assert!(start.elapsed() < Duration::from_secs(30));
}

#[test]
fn bad_init_arguments_are_rejected() {
    let id = UniqueId {
        root: "127.0.0.1:9".parse().unwrap(),
        secret: oxccl::bootstrap::Secret([0; 32]),
    };
    let e = Communicator::init(id, 0, 0, Config::default()).unwrap_err();
    assert!(e.to_string().contains("nranks"), "{e}");
    let e = Communicator::init(id, 2, 2, Config::default()).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
}

#[test]
fn tcp_and_shm_mixed_by_host_identity() {
    // Ranks 0,1 claim one host and 2,3 another: shm inside each pair, tcp across.
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let handles: Vec<_> = (0..4u32)
        .map(|r| {
            std::thread::spawn(move || {
                let mut cfg = config(30.0, TransportChoice::Auto);
                cfg.hostname = Some(format!("host{}", r / 2));
                let mut c = Communicator::init(id, 4, r, cfg).unwrap();
                let mut v = vec![r as i64; 70_001];
                c.all_reduce_in_place(&mut v, ReduceOp::Max).unwrap();
                v[70_000]
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 3);
    }
}

#[test]
fn group_order_of_collectives_and_sends_may_differ_between_ranks() {
    let out = job(2, config(30.0, TransportChoice::Tcp), |c| {
        let ones = vec![1f32 + c.rank() as f32; 32_000];
        let mut sum = vec![0f32; 32_000];
        let payload = vec![42f32; 16_000];
        let mut got = vec![0f32; 16_000];
        let rank = c.rank();
        let mut g = c.group();
        if rank == 0 {
            g.all_reduce(&ones, &mut sum, ReduceOp::Sum).unwrap();
            g.send(&payload, 1).unwrap();
        } else {
            g.recv(&mut got, 0).unwrap();
            g.all_reduce(&ones, &mut sum, ReduceOp::Sum).unwrap();
        }
        g.run().unwrap();
        (sum[0], sum[31_999], got[0], got[15_999])
    });
    assert_eq!((out[0].0, out[0].1), (3.0, 3.0));
    assert_eq!(out[1], (3.0, 3.0, 42.0, 42.0));
}

#[test]
fn a_message_of_another_op_is_reported_not_consumed() {
    // Rank 0 sends 40000 floats (two channels), rank 1 receives 20000 (one channel): the
    // byte counts of the first messages agree, so only the tags can tell.
    let out = job(2, config(5.0, TransportChoice::Shm), |c| {
        if c.rank() == 0 {
            let r = c.send(&vec![1f32; 40_000], 1);
            let mut v = [0u8; 4];
            let _ = c.recv(&mut v, 1);
            r.err().map(|e| e.to_string())
        } else {
            let mut a = vec![0f32; 20_000];
            let first = c.recv(&mut a, 0).err().map(|e| e.to_string());
            // The next receive uses both channels and finds the stray message on channel 1.
            let mut b = vec![0f32; 40_000];
            let second = c.recv(&mut b, 0).err().map(|e| e.to_string());
            let _ = c.send(&[0u8; 4], 0);
            first.or(second)
        }
    });
    let msg = out[1].clone().expect("rank 1 notices the mismatch");
    assert!(
        msg.contains("point-to-point message #0") && msg.contains("#1"),
        "{msg}"
    );
}

#[test]
fn pending_reports_its_failure_again() {
    let out = job(2, config(0.5, TransportChoice::Shm), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_millis(1500));
            return (String::new(), String::new());
        }
        let mut v = vec![0u8; 8];
        let mut g = c.group();
        g.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        let mut p = match g.launch() {
            Ok(p) => p,
            Err(e) => return (e.to_string(), "launch failed".into()),
        };
        let first = loop {
            match p.test() {
                Ok(true) => return ("completed".into(), String::new()),
                Ok(false) => {}
                Err(e) => break e.to_string(),
            }
        };
        (first, p.wait().unwrap_err().to_string())
    });
    assert!(out[0].0.contains("made no progress"), "{:?}", out[0]);
    assert!(out[0].1.contains("unusable"), "{:?}", out[0]);
}

#[test]
fn ranks_with_different_settings_fail_at_init_naming_the_setting() {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(20)).unwrap();
    let handles: Vec<_> = (0..2u32)
        .map(|r| {
            std::thread::spawn(move || {
                let mut cfg = config(20.0, TransportChoice::Auto);
                cfg.nslots = if r == 0 { 8 } else { 4 };
                Communicator::init(id, 2, r, cfg).unwrap_err().to_string()
            })
        })
        .collect();
    for h in handles {
        let e = h.join().unwrap();
        assert!(
            e.contains("OXCCL_NSLOTS=8") && e.contains("OXCCL_NSLOTS=4"),
            "{e}"
        );
    }
}

#[test]
fn gather_and_scatter_check_their_arguments_and_then_run() {
    let out = job(3, config(30.0, TransportChoice::Tcp), |c| {
        let r = c.rank();
        let mut errors = Vec::new();
        let mut note = |res: oxccl::Result<()>| match res {
            Err(e) if e.is_recoverable() => errors.push(e.to_string()),
            other => errors.push(format!("not an argument error: {other:?}")),
        };
        note(c.gather(&[1f32; 2], &mut [0f32; 6], 3));
        note(c.gather(&[1f32; 2], &mut [0f32; 5], 0));
        note(c.gather_in_place(&mut [0f32; 4], 1));
        note(c.scatter(&[], &mut [0f32; 2], 7));
        note(c.scatter(&[1f32; 5], &mut [0f32; 2], 1));
        note(c.scatter_in_place(&mut [0f32; 7], 2));
        // Still usable: a gather onto 1 (rank 0 passes no receive buffer) and a scatter from
        // 2, in one group.
        let mine = [r as f32, 10.0 + r as f32];
        let mut all = if r == 1 { vec![0f32; 6] } else { Vec::new() };
        let blocks: Vec<f32> = (0..6).map(|i| 100.0 + i as f32).collect();
        let send: &[f32] = if r == 2 { &blocks } else { &[] };
        let mut got = [0f32; 2];
        let mut g = c.group();
        g.gather(&mine, &mut all, 1).unwrap();
        g.scatter(send, &mut got, 2).unwrap();
        g.run().unwrap();
        (errors, all, got)
    });
    for (r, (errors, all, got)) in out.into_iter().enumerate() {
        let want = [
            "invalid argument to gather: root 3 is out of range for a communicator of 3 ranks",
            "invalid argument to gather: receive buffer has 5 elements; it must hold 3 ranks × 2",
            "invalid argument to gather: the buffer has 4 elements, not a multiple of the 3 ranks",
            "invalid argument to scatter: root 7 is out of range for a communicator of 3 ranks",
            "invalid argument to scatter: send buffer has 5 elements; it must hold 3 ranks × 2",
            "invalid argument to scatter: the buffer has 7 elements, not a multiple of the 3 ranks",
        ];
        assert_eq!(errors, want, "rank {r}");
        if r == 1 {
            assert_eq!(all, [0.0, 10.0, 1.0, 11.0, 2.0, 12.0]);
        }
        let base = 100.0 + 2.0 * r as f32;
        assert_eq!(got, [base, base + 1.0], "rank {r}");
    }
}

#[test]
fn in_place_gather_and_scatter_use_block_rank() {
    for transport in [TransportChoice::Shm, TransportChoice::Tcp] {
        let out = job(4, config(30.0, transport), |c| {
            let r = c.rank() as usize;
            // Gather onto 3: every rank's own block is already at block r.
            let mut g = vec![-1i64; 4 * 1000];
            g[r * 1000..(r + 1) * 1000].fill(r as i64);
            c.gather_in_place(&mut g, 3).unwrap();
            // Scatter from 0: block j of the root's buffer lands in block j of rank j's.
            let mut s = vec![-1i64; 4 * 1000];
            if r == 0 {
                for (i, x) in s.iter_mut().enumerate() {
                    *x = (i / 1000 * 10) as i64;
                }
            }
            c.scatter_in_place(&mut s, 0).unwrap();
            (g, s)
        });
        for (r, (g, s)) in out.into_iter().enumerate() {
            for (i, (&gi, &si)) in g.iter().zip(&s).enumerate() {
                let block = i / 1000;
                let gathered = if r == 3 || block == r {
                    block as i64
                } else {
                    -1
                };
                let scattered = if r == 0 || block == r {
                    block as i64 * 10
                } else {
                    -1
                };
                assert_eq!(
                    (gi, si),
                    (gathered, scattered),
                    "{transport:?} rank {r} i {i}"
                );
            }
        }
    }
}

#[test]
fn shrink_builds_a_renumbered_communicator_of_the_survivors() {
    let out = job(4, config(30.0, TransportChoice::Auto), |c| {
        let r = c.rank();
        // Bad lists are argument errors, and leave the communicator usable.
        let own = c.shrink(&[r]).err().map(|e| e.to_string());
        let range = c.shrink(&[9]).err().map(|e| e.to_string());
        assert!(own.is_some_and(|e| e.contains("its own exclude list")));
        assert!(range.is_some_and(|e| e.contains("out of range for 4 ranks")));
        if r == 1 {
            // The excluded rank does not take part.
            return (r, None);
        }
        let mut small = c.shrink(&[1]).expect("shrink");
        let mut v = vec![f64::from(r); 1000];
        small.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
        assert!(v.iter().all(|&x| x == 0.0 + 2.0 + 3.0), "{}", v[0]);
        (r, Some((small.rank(), small.size())))
    });
    assert_eq!(
        out,
        vec![
            (0, Some((0, 3))),
            (1, None),
            (2, Some((1, 3))),
            (3, Some((2, 3)))
        ]
    );
}

#[test]
fn nonblocking_init_then_async_error_query() {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let handles: Vec<_> = (0..2)
        .map(|r| {
            std::thread::spawn(move || {
                let cfg = config(30.0, TransportChoice::Tcp);
                let mut pending = Communicator::init_nonblocking(id, 2, r, cfg).unwrap();
                let deadline = Instant::now() + Duration::from_secs(30);
                let mut c = loop {
                    if let Some(c) = pending.test().unwrap() {
                        break c;
                    }
                    assert!(Instant::now() < deadline, "init never finished");
                    std::thread::sleep(Duration::from_millis(1));
                };
                assert!(pending.test().is_err(), "handed out twice");
                assert!(c.async_error().is_none());
                let mut v = vec![1u32; 10];
                c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                v[0]
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 2);
    }
}

#[test]
fn async_error_reports_an_abort() {
    let out = job(2, config(30.0, TransportChoice::Auto), |c| {
        c.abort_handle().abort();
        c.async_error().map(|e| e.to_string())
    });
    assert!(out
        .iter()
        .all(|e| e.as_deref().is_some_and(|e| e.contains("aborted"))));
}

#[test]
fn check_mode_names_who_called_what_and_keeps_the_communicator() {
    for transport in [TransportChoice::Shm, TransportChoice::Tcp] {
        let mut cfg = config(30.0, transport);
        cfg.check = true;
        let out = job(3, cfg, |c| {
            let r = c.rank();
            let n = if r == 1 { 1200 } else { 1000 };
            let mut v = vec![1f32; n];
            let count = c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap_err();
            let mut b = vec![0u8; 7];
            let root = c.broadcast_in_place(&mut b, r.min(1)).unwrap_err();
            // Nothing was sent: a matching op still works, with the right result.
            let mut w = vec![1f32; 1000];
            c.all_reduce_in_place(&mut w, ReduceOp::Sum).unwrap();
            assert!(w.iter().all(|&x| x == 3.0));
            (count.to_string(), root.to_string(), count.is_recoverable())
        });
        for (count, root, recoverable) in out {
            assert!(recoverable);
            assert!(
                count.contains("the ranks disagree on all_reduce #1")
                    && count.contains("ranks 0, 2 called all_reduce of 1000 float (sum)")
                    && count.contains("rank 1 called all_reduce of 1200 float (sum)"),
                "{count}"
            );
            assert!(
                root.contains("rank 0 called broadcast of 7 uint8 from/to root 0")
                    && root.contains("ranks 1-2 called broadcast of 7 uint8 from/to root 1"),
                "{root}"
            );
        }
    }
}

#[test]
fn strangers_at_the_root_do_not_disturb_the_rendezvous() {
    use std::io::Write;
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let root = id.root;
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // A port scanner, a garbage sender, an oversized claim, and a peer with the wrong secret.
    let stranger = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut rejected = 0;
            while !stop.load(Ordering::SeqCst) {
                drop(std::net::TcpStream::connect(root));
                if let Ok(mut s) = std::net::TcpStream::connect(root) {
                    let _ = s.write_all(&[0xde; 300]);
                }
                if let Ok(mut s) = std::net::TcpStream::connect(root) {
                    let mut claim = vec![0u8; 64];
                    claim.extend(u32::MAX.to_le_bytes());
                    let _ = s.write_all(&claim);
                }
                let wrong = [0x11u8; 32];
                let deadline = Instant::now() + Duration::from_secs(2);
                match oxccl_transports::tcp::connect(root, &wrong, &[0, 0, 0, 0], deadline) {
                    Err(oxccl_transports::Error::Auth { .. }) => rejected += 1,
                    // The rendezvous is over and the root gone: nothing left to disturb.
                    Err(_) => break,
                    Ok(_) => panic!("a wrong secret was accepted by the root"),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            rejected
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let handles: Vec<_> = (0..3)
        .map(|r| {
            std::thread::spawn(move || {
                // Ranks arrive spread out, so the strangers hit the root between them.
                std::thread::sleep(Duration::from_millis(150 * u64::from(r)));
                let mut c = Communicator::init(id, 3, r, config(30.0, TransportChoice::Tcp))
                    .expect("init despite strangers");
                let mut v = vec![1u32; 1000];
                c.all_reduce_in_place(&mut v, ReduceOp::Sum).unwrap();
                v[999]
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 3);
    }
    stop.store(true, Ordering::SeqCst);
    let rejected = stranger.join().unwrap();
    assert!(rejected > 0, "the wrong secret never reached the root");
}
