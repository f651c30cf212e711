//! One-shot all-reduce is verified for 1..=64 ranks (and 100, 128), out of place and in place,
//! with 1 and 2 channels; broken variants and misuses of `Step::Reduce` are caught.

mod common;

use common::{steps, verify_modes};
use oxccl_algorithms::verify::{verify, verify_with, VerifyError, VerifyOptions};
use oxccl_algorithms::{Algorithm, Buf, Collective, Plan, Region, Shape, Step};

fn plans(p: u32, nchannels: u32) -> Vec<Plan> {
    common::plans(Algorithm::OneShot, Collective::AllReduce, p, nchannels)
}

fn region(buf: Buf, block: u32) -> Region {
    Region::new(buf, block, 0)
}

fn in_place() -> VerifyOptions {
    VerifyOptions {
        in_place: true,
        ..VerifyOptions::default()
    }
}

/// Verifies with 1 and 2 channels, in and out of place, FIFOs of two chunks and of one, two
/// and three rounds.
fn check(p: u32) {
    for nchannels in [1, 2] {
        let plans = plans(p, nchannels);
        let what = format!("p={p} ch={nchannels}");
        let fifos = [(2, 2), (1, 2), (2, 3)];
        for report in verify_modes(&plans, &what, &[false, true], &fifos) {
            assert_eq!(report.max_sends, p as usize - 1);
            let messages = u64::from(p) * u64::from(p - 1) * u64::from(nchannels);
            assert_eq!(report.messages_per_round, messages);
        }
    }
}

#[test]
fn all_reduce() {
    for p in 1..=64 {
        check(p);
    }
}

#[test]
fn larger_worlds() {
    for p in [100, 128] {
        check(p);
    }
}

#[test]
fn missing_reduce_loses_the_own_input() {
    let mut plans = plans(4, 1);
    steps(&mut plans[2]).retain(|s| !matches!(s, Step::Reduce { .. }));
    let err = verify(&plans).unwrap_err();
    let VerifyError::WrongResult {
        rank,
        expected,
        got: Some(got),
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((*rank, expected.len(), got.len()), (2, 4, 3));
    assert!(err.to_string().contains("missing {r2.b0.s0}"), "{err}");
}

#[test]
fn recv_instead_of_recv_reduce_loses_contributions() {
    let mut plans = plans(5, 1);
    let last = steps(&mut plans[1]).last_mut().unwrap();
    let Step::RecvReduce { from, dst, .. } = *last else {
        panic!("{last:?}")
    };
    *last = Step::Recv { from, dst };
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 1, .. }),
        "{err}"
    );
}

#[test]
fn receiving_before_sending_deadlocks() {
    let mut plans = plans(4, 1);
    for plan in &mut plans {
        steps(plan).sort_by_key(|s| s.send_peer().is_some());
    }
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(blocked.len(), 4);
}

#[test]
fn folding_into_the_output_first_breaks_in_place() {
    // Rank 1 of 3 accumulates in the output from the start: right out of place; in place, the
    // receive from rank 0 overwrites the input that the reduce then reads.
    let mut plans = plans(3, 1);
    let scratch = region(Buf::Scratch, 0);
    let output = region(Buf::Output, 0);
    for step in steps(&mut plans[1]) {
        match step {
            Step::Recv { dst, .. } | Step::Reduce { dst, .. } if *dst == scratch => *dst = output,
            Step::RecvReduce { src, .. } if *src == scratch => *src = output,
            _ => {}
        }
    }
    verify(&plans).unwrap();
    let err = verify_with(&plans, &in_place()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Race { at, .. } if at.rank == 1),
        "{err}"
    );
    assert!(err.to_string().contains("same memory"), "{err}");
}

/// A one-rank all-reduce plan with a scratch block and `steps` after its copy.
fn local(extra: &[Step]) -> Vec<Plan> {
    let mut plans = plans(1, 1);
    plans[0].scratch = Shape { blocks: 2 };
    steps(&mut plans[0]).extend_from_slice(extra);
    plans
}

#[test]
fn reduce_semantics_in_the_verifier() {
    let (input, output) = (region(Buf::Input, 0), region(Buf::Output, 0));
    let scratch = region(Buf::Scratch, 0);
    let fill = Step::Copy {
        src: input,
        dst: scratch,
    };
    let reduce = |src, dst| Step::Reduce { src, dst };
    // Reading an unwritten chunk, on either side.
    for (src, dst) in [(scratch, output), (output, scratch)] {
        let err = verify(&local(&[reduce(src, dst)])).unwrap_err();
        assert!(
            matches!(&err, VerifyError::ReadUninitialised { region, .. } if *region == scratch),
            "{err}"
        );
    }
    // Writing the input: rank 1 of 2 reduces the received chunk into its input.
    let mut two = plans(2, 1);
    for step in steps(&mut two[1]) {
        if let Step::Reduce { src, dst } = step {
            std::mem::swap(src, dst);
        }
    }
    let err = verify(&two).unwrap_err();
    assert!(
        matches!(&err, VerifyError::WriteToInput { at, .. } if at.rank == 1),
        "{err}"
    );
    // The same contribution on both sides.
    let err = verify(&local(&[fill, reduce(scratch, output)])).unwrap_err();
    assert!(
        matches!(&err, VerifyError::DoubleContribution { contribution, .. } if contribution.rank == 0),
        "{err}"
    );
    // The same memory on both sides, named alike or (in place) aliased.
    let err = verify(&local(&[reduce(output, output)])).unwrap_err();
    assert!(matches!(err, VerifyError::Race { .. }), "{err}");
    let err = verify_with(&local(&[reduce(input, output)]), &in_place()).unwrap_err();
    assert!(matches!(err, VerifyError::Race { .. }), "{err}");
    // Chunks of different splits.
    let mut plans = local(&[reduce(Region::new(Buf::Input, 0, 1), output)]);
    plans[0].splits = 2;
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
}

#[test]
fn reduce_is_local() {
    let step = Step::Reduce {
        src: region(Buf::Input, 0),
        dst: region(Buf::Scratch, 1),
    };
    assert_eq!((step.send_peer(), step.recv_peer()), (None, None));
    assert_eq!(step.to_string(), "reduce input[b0.s0] into scratch[b1.s0]");
}
