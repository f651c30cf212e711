//! Every collective × datatype × op × in-place/out-of-place, counts 0, 1, primes and
//! ≥ 16 Mi elements, on 1..=8 real processes started by `oxccl-run`, over shared memory and
//! over TCP, each result compared with a sequential reference by `oxccl-selftest`.
//!
//! Odd rank counts run with a small FIFO (4 KiB × 4 slots) so that every op spans many rounds
//! and slices; even ones with the defaults.

mod common;

fn check(n: u32, transport: &str) {
    let small_fifo = n % 2 == 1;
    let mut env = vec![("OXCCL_TRANSPORT", transport), ("OXCCL_TIMEOUT", "120")];
    if small_fifo {
        env.extend([("OXCCL_SLOT_SIZE", "4K"), ("OXCCL_NSLOTS", "4")]);
    }
    let ran = common::run_job(n, &["--grace", "5"], common::selftest(), &["--large"], &env);
    let ok = ran.output.matches("selftest OK").count();
    assert!(
        ran.code == Some(0) && ok == n as usize,
        "{n} ranks over {transport}: exit {:?}, {ok} ranks OK after {:?}\n{}",
        ran.code,
        ran.elapsed,
        ran.output
    );
}

macro_rules! suite {
    ($($name:ident: $n:expr, $t:expr;)*) => {$(
        #[test]
        fn $name() {
            check($n, $t);
        }
    )*};
}

suite! {
    shm_1_rank: 1, "shm";
    shm_2_ranks: 2, "auto";
    shm_3_ranks: 3, "shm";
    shm_4_ranks: 4, "shm";
    shm_5_ranks: 5, "shm";
    shm_6_ranks: 6, "shm";
    shm_7_ranks: 7, "shm";
    shm_8_ranks: 8, "shm";
    tcp_1_rank: 1, "tcp";
    tcp_2_ranks: 2, "tcp";
    tcp_3_ranks: 3, "tcp";
    tcp_4_ranks: 4, "tcp";
    tcp_5_ranks: 5, "tcp";
    tcp_6_ranks: 6, "tcp";
    tcp_7_ranks: 7, "tcp";
    tcp_8_ranks: 8, "tcp";
}
