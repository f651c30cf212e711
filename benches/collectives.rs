//! In-process benches: a transport round trip (shm and tcp, straight through the transport
//! API) and plan execution (an all-reduce on two ranks that are threads of this process).
//! `cargo bench --bench collectives`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use oxccl::{Communicator, Config, ReduceOp, TransportChoice, UniqueId};
use oxccl_transports::shm::ShmContext;
use oxccl_transports::tcp::{self, Listener};
use oxccl_transports::{FifoConfig, RecvChannel, SendChannel};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Sends `len` bytes and waits for them to come back (the peer thread echoes).
fn round_trip(tx: &mut dyn SendChannel, rx: &mut dyn RecvChannel, len: usize) {
    loop {
        if let Some(slot) = tx.try_acquire().unwrap() {
            slot[..len].fill(7);
            break;
        }
        tx.progress().unwrap();
    }
    tx.commit(len, 1).unwrap();
    tx.progress().unwrap();
    loop {
        if rx.try_peek().unwrap().is_some() {
            rx.release().unwrap();
            return;
        }
        rx.progress().unwrap();
        tx.progress().unwrap();
    }
}

/// Echoes every message until the channel closes.
fn echo(mut tx: Box<dyn SendChannel>, mut rx: Box<dyn RecvChannel>) {
    loop {
        let len = match rx.try_peek() {
            Ok(Some(m)) => m.data.len(),
            Ok(None) => {
                if rx.progress().is_err() {
                    return;
                }
                continue;
            }
            Err(_) => return,
        };
        rx.release().unwrap();
        loop {
            if tx.try_acquire().unwrap().is_some() {
                break;
            }
            tx.progress().unwrap();
        }
        tx.commit(len, 1).unwrap();
        while !tx.flushed() {
            tx.progress().unwrap();
        }
    }
}

fn transports(c: &mut Criterion) {
    let fifo = FifoConfig::default();
    let mut g = c.benchmark_group("transport_round_trip");
    // shm: two contexts in one process, as two local ranks.
    let tag = format!("bench{}", std::process::id());
    let mut a = ShmContext::create(&tag, 0, 2, 1, fifo, 0).unwrap();
    let mut b = ShmContext::create(&tag, 1, 2, 1, fifo, 0).unwrap();
    let (an, bn) = (a.name().to_owned(), b.name().to_owned());
    let pid = std::process::id();
    a.map_peer(1, &bn, pid).unwrap();
    b.map_peer(0, &an, pid).unwrap();
    a.unlink().unwrap();
    b.unlink().unwrap();
    let (mut atx, mut arx) = (a.sender(1, 0).unwrap(), a.receiver(1, 0).unwrap());
    let (btx, brx) = (b.sender(0, 0).unwrap(), b.receiver(0, 0).unwrap());
    let peer = std::thread::spawn(move || echo(Box::new(btx), Box::new(brx)));
    for len in [8usize, 64 << 10] {
        g.throughput(Throughput::Bytes(2 * len as u64));
        g.bench_with_input(BenchmarkId::new("shm", len), &len, |bench, &len| {
            bench.iter(|| round_trip(&mut atx, &mut arx, len))
        });
    }
    drop((atx, arx));
    peer.join().unwrap();

    // tcp over loopback.
    let key = [9u8; 32];
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (stx, srx) = mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        let (s, _, _) = listener.accept(&key, deadline).unwrap();
        let (tx, rx) = tcp::channel_pair(s, "bench peer".into(), fifo).unwrap();
        stx.send(()).unwrap();
        echo(Box::new(tx), Box::new(rx));
    });
    let s = tcp::connect(addr, &key, b"bench", deadline).unwrap();
    srx.recv().unwrap();
    let (mut ttx, mut trx) = tcp::channel_pair(s, "bench root".into(), fifo).unwrap();
    for len in [8usize, 64 << 10] {
        g.throughput(Throughput::Bytes(2 * len as u64));
        g.bench_with_input(BenchmarkId::new("tcp", len), &len, |bench, &len| {
            bench.iter(|| round_trip(&mut ttx, &mut trx, len))
        });
    }
    drop((ttx, trx));
    acceptor.join().unwrap();
    g.finish();
}

/// An all-reduce on two ranks that are threads of this process: rank 1 runs in a helper
/// thread, executing as many all-reduces as the measured rank 0 asks for.
fn plan_execution(c: &mut Criterion) {
    let mut g = c.benchmark_group("all_reduce_2_threads");
    for transport in [TransportChoice::Shm, TransportChoice::Tcp] {
        for bytes in [1024usize, 1 << 20] {
            let id =
                UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
            let mut cfg = Config::default();
            cfg.transport = transport;
            let (go_tx, go_rx) = mpsc::channel::<u64>();
            let cfg1 = cfg.clone();
            let peer = std::thread::spawn(move || {
                let mut comm = Communicator::init(id, 2, 1, cfg1).unwrap();
                let mut buf = vec![1f32; bytes / 4];
                while let Ok(n) = go_rx.recv() {
                    for _ in 0..n {
                        comm.all_reduce_in_place(&mut buf, ReduceOp::Sum).unwrap();
                    }
                }
            });
            let mut comm = Communicator::init(id, 2, 0, cfg).unwrap();
            let mut buf = vec![1f32; bytes / 4];
            g.throughput(Throughput::Bytes(bytes as u64));
            let name = format!("{transport:?}").to_lowercase();
            g.bench_with_input(BenchmarkId::new(name, bytes), &bytes, |bench, _| {
                bench.iter_custom(|iters| {
                    go_tx.send(iters).unwrap();
                    let t = Instant::now();
                    for _ in 0..iters {
                        comm.all_reduce_in_place(&mut buf, ReduceOp::Sum).unwrap();
                    }
                    t.elapsed()
                })
            });
            drop(go_tx);
            peer.join().unwrap();
        }
    }
    g.finish();
}

criterion_group!(benches, transports, plan_execution);
criterion_main!(benches);
