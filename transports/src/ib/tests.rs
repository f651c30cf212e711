//! Verbs transport tests. Those marked `#[ignore]` need an RDMA device: the soft-RoCE suite
//! (`scripts/softroce/suite.sh`) runs them inside a QEMU guest with `--ignored`.

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use super::*;
use crate::testutil::{messages, recv_all, send_all};
use crate::{Error, FifoConfig, RecvChannel, SendChannel};

type Ends = (IbSender, IbReceiver);

/// Two connected ends in this process, over the first usable port.
fn pair(fifo: FifoConfig, a: IbSettings, b: IbSettings) -> (Ends, Ends) {
    let port = usable_ports(&a).expect("an RDMA device").remove(0);
    let port_b = usable_ports(&b).expect("an RDMA device").remove(0);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let other = std::thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        channel_pair(s, "rank 0".into(), &port_b, fifo, &b, deadline)
    });
    let (s, _) = listener.accept().unwrap();
    let here = channel_pair(s, "rank 1".into(), &port, fifo, &a, deadline).unwrap();
    (here, other.join().unwrap().unwrap())
}

#[test]
fn without_a_device_ports_are_refused_with_the_reason() {
    let devices = std::fs::read_dir("/sys/class/infiniband").map_or(0, |d| d.count());
    match usable_ports(&IbSettings::default()) {
        Ok(ports) => assert!(devices > 0 && !ports.is_empty()),
        Err(e) => {
            let e = e.to_string();
            assert!(devices > 0 || e.contains("no IB device"), "{e}");
        }
    }
}

#[test]
fn settings_out_of_range_are_named() {
    for (s, says) in [
        (
            IbSettings {
                timeout: 0,
                ..Default::default()
            },
            "OXCCL_IB_TIMEOUT",
        ),
        (
            IbSettings {
                retry_cnt: 8,
                ..Default::default()
            },
            "OXCCL_IB_RETRY_CNT",
        ),
        (
            IbSettings {
                qps_per_connection: 0,
                ..Default::default()
            },
            "QPS_PER_CONNECTION",
        ),
        (
            IbSettings {
                service_level: 16,
                ..Default::default()
            },
            "OXCCL_IB_SL",
        ),
    ] {
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }
    IbSettings::default().validate().unwrap();
}

fn stream_both_ways(nqps: u32) {
    let fifo = FifoConfig {
        slot_size: 4096,
        nslots: 4,
    };
    let s = IbSettings {
        qps_per_connection: nqps,
        ..Default::default()
    };
    let ((mut tx_a, mut rx_a), (mut tx_b, mut rx_b)) = pair(fifo, s.clone(), s);
    let to_b = messages(200, fifo.slot_size, 1);
    let to_a = messages(150, fifo.slot_size, 2);
    // Four threads, as the engine would drive the four halves: each side sends while it
    // receives, so neither waits for credits the other is not yet giving.
    let (got_a, got_b) = std::thread::scope(|s| {
        s.spawn(|| send_all(&mut tx_a, &to_b, None));
        s.spawn(|| send_all(&mut tx_b, &to_a, None));
        let got_b = s.spawn(|| recv_all(&mut rx_b, to_b.len(), None));
        let got_a = recv_all(&mut rx_a, to_a.len(), None);
        (got_a, got_b.join().unwrap())
    });
    assert_eq!(got_a, to_a);
    assert_eq!(got_b, to_b);
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn messages_arrive_in_order_with_their_tags_over_one_queue_pair() {
    stream_both_ways(1);
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn messages_spread_over_three_queue_pairs_still_arrive_in_order() {
    stream_both_ways(3);
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn a_peer_whose_queue_pairs_are_gone_gives_a_completion_error_naming_it() {
    let fifo = FifoConfig {
        slot_size: 4096,
        nslots: 4,
    };
    // 4.096 µs × 2^12 ≈ 17 ms per try, one retry: the error comes within a second.
    let fast = IbSettings {
        timeout: 12,
        retry_cnt: 1,
        ..Default::default()
    };
    let ((mut tx, _rx), (tx_b, rx_b)) = pair(fifo, fast.clone(), fast);
    // Tear the peer's queue pairs down (what a crash does), keep its side stream open so
    // only the completion can tell.
    let keep_stream = rx_b.stream.try_clone().unwrap();
    drop((tx_b, rx_b));
    let deadline = Instant::now() + Duration::from_secs(20);
    let e = loop {
        let r = match tx.try_acquire() {
            Ok(Some(slot)) => {
                slot[..8].copy_from_slice(&[9; 8]);
                tx.commit(8, 1)
            }
            Ok(None) => tx.progress().map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            break e;
        }
        assert!(Instant::now() < deadline, "no completion error in 20 s");
        std::thread::sleep(Duration::from_millis(5));
    };
    drop(keep_stream);
    let text = e.to_string();
    assert!(matches!(e, Error::PeerClosed { .. }), "{text}");
    assert!(text.contains("rank 1") && text.contains("retry"), "{text}");
    assert!(text.contains("OXCCL_IB_RETRY_CNT=1"), "{text}");
    // The failure sticks.
    assert!(tx.progress().is_err());
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn a_receiver_sees_the_peer_gone_after_the_last_message() {
    let fifo = FifoConfig {
        slot_size: 1024,
        nslots: 4,
    };
    let s = IbSettings::default();
    let ((mut tx, rx), (tx_b, mut rx_b)) = pair(fifo, s.clone(), s);
    let msgs = messages(3, fifo.slot_size, 5);
    send_all(&mut tx, &msgs, None);
    drop((tx, rx));
    assert_eq!(recv_all(&mut rx_b, 3, None), msgs);
    // No message left: check_alive names the peer as gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rx_b.check_alive() {
            Err(Error::PeerClosed { peer, .. }) => {
                assert_eq!(peer, "rank 0");
                break;
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(()) => assert!(Instant::now() < deadline, "peer never seen gone"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(tx_b);
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn different_fifo_sizes_are_refused_with_both_named() {
    let port = usable_ports(&IbSettings::default()).unwrap().remove(0);
    let port_b = port.clone();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fifo = |nslots| FifoConfig {
        slot_size: 1024,
        nslots,
    };
    let other = std::thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        channel_pair(
            s,
            "rank 0".into(),
            &port_b,
            fifo(8),
            &IbSettings::default(),
            deadline,
        )
        .map(drop)
    });
    let (s, _) = listener.accept().unwrap();
    let e = channel_pair(
        s,
        "rank 1".into(),
        &port,
        fifo(4),
        &IbSettings::default(),
        deadline,
    )
    .map(drop)
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("8 slots") && e.contains("4 of 1024") && e.contains("OXCCL_NSLOTS"),
        "{e}"
    );
    assert!(other.join().unwrap().is_err());
}

#[test]
#[ignore = "needs an RDMA device (scripts/softroce/suite.sh)"]
fn ports_are_described_with_their_address() {
    let ports = usable_ports(&IbSettings::default()).unwrap();
    for p in &ports {
        let d = p.describe();
        println!("{d}");
        assert!(d.contains("MTU"), "{d}");
        if p.roce {
            assert!(d.contains("GID index"), "{d}");
        }
    }
    // A filter that matches nothing names every device it skipped.
    let none = IbSettings {
        hca: Some(HcaSpec::parse("=no_such_device").unwrap()),
        ..Default::default()
    };
    let e = usable_ports(&none).unwrap_err().to_string();
    assert!(
        e.contains(ports[0].device_name()) && e.contains("OXCCL_IB_HCA"),
        "{e}"
    );
}
