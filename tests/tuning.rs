//! Tuning files on real communicators (ranks as threads): the measurements steer the
//! tuner's choice, the ops it then runs give the right results, and ranks that read
//! different files fail at init instead of running different algorithms.

use oxccl::tuner::{LinkClass, TuningFile};
use oxccl::{Algorithm, Collective, Communicator, Config, DataType, ReduceOp, UniqueId};
use std::sync::Arc;
use std::time::Duration;

/// Broadcast on 3 shm ranks: binomial measured fastest up to 1 KiB, ring at 1 MiB;
/// all-reduce: recursive doubling (channel cap 2) beats ring at the one size measured, so
/// everywhere. The tcp line must not matter on shm.
const FILE: &str = "\
time,broadcast,shm,3,8,binomial,1,2
time,broadcast,shm,3,8,ring,2,5
time,broadcast,shm,3,1024,binomial,1,8
time,broadcast,shm,3,1024,ring,2,9
time,broadcast,shm,3,1048576,binomial,1,900
time,broadcast,shm,3,1048576,ring,2,300
time,all_reduce,shm,3,8,recursive_doubling,2,1
time,all_reduce,shm,3,8,ring,1,3
time,all_reduce,tcp,3,8,ring,1,0.5
";

fn tuned_config(text: &str) -> Config {
    let mut c = Config::default();
    c.timeout = Duration::from_secs(30);
    c.tuning = Some(Arc::new(TuningFile::parse(text).unwrap()));
    c
}

#[test]
fn measurements_steer_the_choice_and_results_stay_right() {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let handles: Vec<_> = (0..3u32)
        .map(|r| {
            std::thread::spawn(move || {
                let mut c = Communicator::init(id, 3, r, tuned_config(FILE)).unwrap();
                assert_eq!(c.link_class(), LinkClass::Shm);
                let bcast = |c: &Communicator, n| {
                    c.choice(Collective::Broadcast { root: 1 }, DataType::Float32, n)
                };
                assert_eq!(bcast(&c, 2).algorithm, Algorithm::Binomial);
                assert_eq!(bcast(&c, 256).algorithm, Algorithm::Binomial);
                assert_eq!(bcast(&c, 1 << 18).algorithm, Algorithm::Ring);
                let ar = c.choice(Collective::AllReduce, DataType::Float32, 1 << 20);
                assert_eq!(
                    (ar.algorithm, ar.nchannels),
                    (Algorithm::RecursiveDoubling, 2)
                );
                // Not measured: the built-in choice.
                let ag = c.choice(Collective::AllGather, DataType::Float32, 16);
                let builtin = oxccl::tuner::choose(
                    &Config::default(),
                    None,
                    Collective::AllGather,
                    DataType::Float32,
                    16,
                    3,
                    true,
                );
                assert_eq!(ag, builtin);
                // The chosen algorithms compute the right thing.
                let mut buf: Vec<f32> = (0..300).map(|i| (i + 1000 * r) as f32).collect();
                c.broadcast_in_place(&mut buf, 1).unwrap();
                let want: Vec<f32> = (0..300).map(|i| (i + 1000) as f32).collect();
                assert_eq!(buf, want);
                let mine: Vec<f32> = (0..5000).map(|i| (i * (r + 1)) as f32).collect();
                let mut sum = vec![0f32; 5000];
                c.all_reduce(&mine, &mut sum, ReduceOp::Sum).unwrap();
                assert!(sum.iter().enumerate().all(|(i, &s)| s == (6 * i) as f32));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn ranks_with_different_tuning_files_fail_at_init() {
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), Duration::from_secs(30)).unwrap();
    let handles: Vec<_> = (0..2u32)
        .map(|r| {
            std::thread::spawn(move || {
                let text = if r == 0 {
                    FILE
                } else {
                    "time,all_reduce,shm,2,8,ring,1,3\n"
                };
                Communicator::init(id, 2, r, tuned_config(text))
                    .err()
                    .map(|e| e.to_string())
            })
        })
        .collect();
    for h in handles {
        let e = h.join().unwrap().expect("init must fail");
        assert!(e.contains("OXCCL_TUNING_FILE="), "{e}");
    }
}
