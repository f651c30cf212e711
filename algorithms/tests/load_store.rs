//! The load/store plans, verified for every collective (and root) on 1..=64 ranks, out of
//! place and in place; then broken on purpose, so that the verifier must name the fault.

mod common;

use common::{roots, verify_modes};
use oxccl_algorithms::verify::{verify, verify_with, VerifyError, VerifyOptions, Wait};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Step};

fn plans(alg: Algorithm, c: Collective, p: u32) -> Vec<Plan> {
    // Load/store plans always have one channel, whatever is asked.
    common::plans(alg, c, p, 4)
}

fn check(alg: Algorithm, c: Collective, p: u32) {
    let plans = plans(alg, c, p);
    for plan in &plans {
        assert_eq!(plan.channels.len(), 1);
    }
    // Three rounds: consecutive rounds use both window halves and then reuse one.
    verify_modes(
        &plans,
        &format!("{alg} {c:?} p={p}"),
        &[false, true],
        &[(2, 3)],
    );
}

#[test]
fn one_shot_every_collective() {
    let alg = Algorithm::LoadStoreOneShot;
    for p in 1..=64 {
        for c in [
            Collective::AllReduce,
            Collective::AllGather,
            Collective::ReduceScatter,
            Collective::AllToAll,
        ] {
            check(alg, c, p);
        }
        for root in roots(p) {
            check(alg, Collective::Broadcast { root }, p);
            check(alg, Collective::Reduce { root }, p);
        }
    }
}

#[test]
fn two_shot_all_reduce() {
    for p in (1..=64).chain([100, 128]) {
        check(Algorithm::LoadStoreTwoShot, Collective::AllReduce, p);
    }
}

#[test]
fn load_store_does_not_do_point_to_point() {
    for alg in [Algorithm::LoadStoreOneShot, Algorithm::LoadStoreTwoShot] {
        assert!(build(alg, Collective::Send { peer: 1 }, 2, 0, 1).is_err());
        assert!(alg.is_load_store());
    }
    assert!(!Algorithm::LoadStoreTwoShot.supports(Collective::AllGather));
    assert!(!Algorithm::Ring.is_load_store());
    for alias in ["ls_one_shot", "LOAD_STORE_ONE_SHOT", "ls-two-shot"] {
        assert!(
            alias.parse::<Algorithm>().unwrap().is_load_store(),
            "{alias}"
        );
    }
}

#[test]
fn registered_inputs_out_of_place() {
    // Peers read the input itself instead of a staged copy: every plan still computes its
    // collective, out of place.
    let options = VerifyOptions {
        registered_input: true,
        rounds: 3,
        ..VerifyOptions::default()
    };
    for p in 1..=24 {
        let mut cases = vec![
            (Algorithm::LoadStoreTwoShot, Collective::AllReduce),
            (Algorithm::LoadStoreOneShot, Collective::AllReduce),
            (Algorithm::LoadStoreOneShot, Collective::AllGather),
            (Algorithm::LoadStoreOneShot, Collective::ReduceScatter),
            (Algorithm::LoadStoreOneShot, Collective::AllToAll),
        ];
        for root in roots(p) {
            cases.push((Algorithm::LoadStoreOneShot, Collective::Broadcast { root }));
            cases.push((Algorithm::LoadStoreOneShot, Collective::Reduce { root }));
        }
        for (alg, c) in cases {
            verify_with(&plans(alg, c, p), &options)
                .unwrap_or_else(|e| panic!("{alg} {c:?} p={p} registered: {e}"));
        }
    }
}

#[test]
fn registered_input_in_place_is_caught() {
    // In place, one-shot all-reduce writes its result over the input that the other ranks
    // are still reading: the engine therefore reads registered inputs only out of place.
    let options = VerifyOptions {
        registered_input: true,
        in_place: true,
        ..VerifyOptions::default()
    };
    let plans = plans(Algorithm::LoadStoreOneShot, Collective::AllReduce, 3);
    // Depending on the schedule the simulation follows, a reader sees the overwritten input
    // (a contribution twice) or the race is caught when the run ends.
    let err = verify_with(&plans, &options).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WindowRace { .. } | VerifyError::DoubleContribution { .. }
        ),
        "{err}"
    );
}

fn window(block: u32, split: u32) -> Region {
    Region::new(Buf::Window, block, split)
}

#[test]
fn missing_post_deadlocks_and_names_the_owner() {
    let mut plans = plans(Algorithm::LoadStoreOneShot, Collective::AllReduce, 3);
    plans[1].channels[0].retain(|s| !matches!(s, Step::Post { .. }));
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    // Every rank ends up waiting for rank 1's post (rank 1 for rank 0's once it is blocked
    // too? no: rank 1 never posts, the others wait for it).
    assert!(
        blocked
            .iter()
            .any(|b| b.waiting == Wait::Posted { owner: 1, phase: 1 }),
        "{err}"
    );
    assert!(
        err.to_string().contains("waits for rank 1 to post phase 1"),
        "{err}"
    );
}

#[test]
fn post_before_copy_in_reads_uninitialised_window() {
    let mut plans = plans(Algorithm::LoadStoreOneShot, Collective::AllGather, 2);
    // Rank 0 posts first and copies in afterwards: rank 1 may read stale bytes.
    plans[0].channels[0].swap(0, 1);
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::ReadUninitialised { .. } | VerifyError::WindowRace { .. }
        ),
        "{err}"
    );
}

#[test]
fn rewriting_a_posted_region_is_a_window_race() {
    let mut plans = plans(Algorithm::LoadStoreTwoShot, Collective::AllReduce, 2);
    // Rank 0 copies rank 1's slice into its window again after posting it in phase 1,
    // while rank 1 reads it as of phase 1.
    let steps = &mut plans[0].channels[0];
    let post = steps
        .iter()
        .position(|s| *s == Step::Post { phase: 1 })
        .unwrap();
    steps.insert(
        post + 1,
        Step::Copy {
            src: Region::new(Buf::Input, 0, 1),
            dst: window(0, 1),
        },
    );
    let err = verify(&plans).unwrap_err();
    let VerifyError::WindowRace {
        owner,
        phase,
        written,
        ..
    } = err
    else {
        panic!("{err}")
    };
    assert_eq!((owner, phase, written), (0, 1, 2));
}

#[test]
fn reading_a_peer_without_a_window_is_malformed() {
    let mut plans = plans(
        Algorithm::LoadStoreOneShot,
        Collective::Broadcast { root: 0 },
        3,
    );
    // Rank 2 reads rank 1, a non-root, which has no window.
    plans[2].channels[0] = vec![Step::CopyFromPeer {
        peer: 1,
        src: window(0, 0),
        phase: 1,
        dst: Region::new(Buf::Output, 0, 0),
    }];
    plans[1].channels[0].push(Step::Post { phase: 1 });
    plans[1].window.blocks = 0;
    let err = verify(&plans).unwrap_err();
    assert!(
        err.to_string().contains("whose window has 0 blocks"),
        "{err}"
    );
}

#[test]
fn phases_must_count_up_from_one() {
    let mut plans = plans(Algorithm::LoadStoreOneShot, Collective::AllReduce, 2);
    for step in &mut plans[0].channels[0] {
        if let Step::Post { phase } = step {
            *phase = 2;
        }
    }
    let err = verify(&plans).unwrap_err();
    assert!(err.to_string().contains("the next phase is 1"), "{err}");
    let mut plans = plans_of(Algorithm::LoadStoreOneShot, 2);
    plans[1].channels[0].push(Step::CopyFromPeer {
        peer: 0,
        src: Region::new(Buf::Input, 0, 0),
        phase: 1,
        dst: Region::new(Buf::Output, 0, 0),
    });
    let err = verify(&plans).unwrap_err();
    assert!(err.to_string().contains("not its window"), "{err}");
}

fn plans_of(alg: Algorithm, p: u32) -> Vec<Plan> {
    plans(alg, Collective::AllReduce, p)
}

#[test]
fn folding_without_the_own_term_is_caught() {
    let mut plans = plans_of(Algorithm::LoadStoreOneShot, 3);
    // Rank 2 folds its window copy as its own term too... use the output as `own` instead:
    // it was never written.
    for step in &mut plans[2].channels[0] {
        if let Step::ReduceFromPeers { own, .. } = step {
            *own = Region::new(Buf::Output, 0, 0);
        }
    }
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(err, VerifyError::ReadUninitialised { .. }),
        "{err}"
    );
}
