//! Deliberately broken plans: the verifier must name what is wrong.

use oxccl_algorithms::verify::{verify, verify_p2p, verify_with, VerifyError, VerifyOptions, Wait};
use oxccl_algorithms::{build, Algorithm, Buf, Collective, Plan, Region, Shape, Step};

fn plans(c: Collective, p: u32) -> Vec<Plan> {
    (0..p)
        .map(|r| build(Algorithm::Ring, c, p, r, 1).unwrap())
        .collect()
}

fn steps(plan: &mut Plan) -> &mut Vec<Step> {
    &mut plan.channels[0]
}

fn input(block: u32, split: u32) -> Region {
    Region::new(Buf::Input, block, split)
}

fn output(block: u32, split: u32) -> Region {
    Region::new(Buf::Output, block, split)
}

#[test]
fn dropped_middle_of_a_chain_deadlocks() {
    let mut plans = plans(Collective::Broadcast { root: 0 }, 4);
    steps(&mut plans[2]).clear();
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { channel, blocked } = &err else {
        panic!("{err}")
    };
    assert_eq!(*channel, 0);
    assert_eq!(blocked.len(), 1, "{err}");
    assert_eq!(blocked[0].at.rank, 3);
    assert_eq!(blocked[0].at.round, 0);
    assert_eq!(blocked[0].waiting, Wait::Message { from: 2 });
    assert!(err.to_string().contains("rank 3"), "{err}");
}

#[test]
fn dropped_last_receive_is_an_unmatched_send() {
    let mut plans = plans(Collective::Broadcast { root: 1 }, 4);
    steps(&mut plans[0]).clear(); // rank 0 = root-1 ends the chain
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::UnmatchedSend {
                from: 3,
                to: 0,
                round: 0,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn dropped_ring_step_misaligns_the_ring() {
    let mut plans = plans(Collective::AllReduce, 4);
    steps(&mut plans[1]).remove(2);
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::SplitMismatch { .. }), "{err}");
}

#[test]
fn receiving_before_sending_deadlocks() {
    // Every rank forwards before it has sent its own block: nobody ever sends.
    let mut plans = plans(Collective::AllGather, 5);
    for plan in &mut plans {
        steps(plan).swap(1, 2);
    }
    let err = verify(&plans).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(blocked.len(), 5);
    for (r, b) in blocked.iter().enumerate() {
        assert_eq!((b.at.rank, b.at.step), (r as u32, 1));
        assert_eq!(
            b.waiting,
            Wait::Message {
                from: (r as u32 + 4) % 5
            }
        );
    }
}

#[test]
fn pairwise_exchange_as_recv_then_send_deadlocks() {
    let mut plans = plans(Collective::AllToAll, 3);
    for plan in &mut plans {
        let split: Vec<Step> = steps(plan)
            .iter()
            .flat_map(|s| match *s {
                Step::SendRecv { to, src, from, dst } => {
                    vec![Step::Recv { from, dst }, Step::Send { to, src }]
                }
                other => vec![other],
            })
            .collect();
        *steps(plan) = split;
    }
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::Deadlock { .. }), "{err}");
}

#[test]
fn one_chunk_fifos_deadlock_a_ring() {
    let plans = plans(Collective::AllReduce, 3);
    let tight = VerifyOptions {
        fifo_chunks: 1,
        ..VerifyOptions::default()
    };
    let err = verify_with(&plans, &tight).unwrap_err();
    let VerifyError::Deadlock { blocked, .. } = &err else {
        panic!("{err}")
    };
    assert!(blocked
        .iter()
        .all(|b| matches!(b.waiting, Wait::Room { .. })));
    // Chains need no slack.
    verify_with(&self::plans(Collective::Reduce { root: 1 }, 5), &tight).unwrap();
}

#[test]
fn recv_instead_of_recv_reduce_loses_a_contribution() {
    let mut plans = plans(Collective::Reduce { root: 2 }, 4);
    let last = steps(&mut plans[2]).last_mut().unwrap();
    let Step::RecvReduce { from, dst, .. } = *last else {
        panic!("{last:?}")
    };
    *last = Step::Recv { from, dst };
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
    assert_eq!(*rank, 2);
    assert_eq!(expected.len(), 4);
    assert_eq!(got.len(), 3);
    assert!(err.to_string().contains("missing {r2.b0.s0}"), "{err}");
}

#[test]
fn reducing_twice_is_a_double_contribution() {
    // Rank 2 reduces its input into the all-gather phase, where chunks are already complete.
    let mut plans = plans(Collective::AllReduce, 4);
    let step = steps(&mut plans[2])
        .iter_mut()
        .find(|s| matches!(s, Step::RecvCopySend { .. }))
        .unwrap();
    let Step::RecvCopySend { from, to, dst } = *step else {
        unreachable!()
    };
    *step = Step::RecvReduceCopySend {
        from,
        to,
        src: input(0, dst.split),
        dst,
    };
    let err = verify(&plans).unwrap_err();
    let VerifyError::DoubleContribution { at, contribution } = &err else {
        panic!("{err}")
    };
    assert_eq!((at.rank, contribution.rank), (2, 2));
}

#[test]
fn wrong_split_is_caught() {
    let mut plans = plans(Collective::AllReduce, 4);
    steps(&mut plans[0])[0] = Step::Send {
        to: 1,
        src: input(0, 1),
    };
    let err = verify(&plans).unwrap_err();
    let VerifyError::SplitMismatch {
        at,
        from,
        sent,
        received,
        ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((at.rank, *from, sent.split, received.split), (1, 0, 1, 0));
}

#[test]
fn sending_to_self_is_caught() {
    let mut plans = plans(Collective::AllGather, 3);
    steps(&mut plans[1])[1] = Step::Send {
        to: 1,
        src: input(0, 0),
    };
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(&err, VerifyError::SelfMessage { at } if at.rank == 1 && at.step == 1),
        "{err}"
    );
}

#[test]
fn broadcast_root_without_copy_has_no_output() {
    let mut plans = plans(Collective::Broadcast { root: 1 }, 3);
    steps(&mut plans[1]).remove(0);
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::WrongResult {
                rank: 1,
                got: None,
                ..
            }
        ),
        "{err}"
    );
    // In place, the root's output is its input: the copy is not needed.
    let in_place = VerifyOptions {
        in_place: true,
        ..VerifyOptions::default()
    };
    verify_with(&plans, &in_place).unwrap();
}

#[test]
fn output_used_as_temporary_breaks_in_place() {
    // Correct out of place; in place, output block 0 of rank 0 is its input block 0, which
    // the copy destroys before the last step reads it.
    let mut plans = plans(Collective::ReduceScatter, 3);
    steps(&mut plans[0]).insert(
        0,
        Step::Copy {
            src: input(1, 0),
            dst: output(0, 0),
        },
    );
    verify(&plans).unwrap();
    let in_place = VerifyOptions {
        in_place: true,
        ..VerifyOptions::default()
    };
    let err = verify_with(&plans, &in_place).unwrap_err();
    assert!(
        matches!(err, VerifyError::WrongResult { rank: 0, .. }),
        "{err}"
    );
}

#[test]
fn reading_unwritten_output_is_caught() {
    let mut plans = plans(Collective::AllGather, 3);
    steps(&mut plans[2])[1] = Step::Send {
        to: 0,
        src: output(0, 0),
    };
    let err = verify(&plans).unwrap_err();
    assert!(
        matches!(&err, VerifyError::ReadUninitialised { at, region } if at.rank == 2 && region.buf == Buf::Output),
        "{err}"
    );
}

#[test]
fn writing_input_is_caught() {
    let mut plans = plans(Collective::AllReduce, 1);
    steps(&mut plans[0])[0] = Step::Copy {
        src: input(0, 0),
        dst: input(0, 0),
    };
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::WriteToInput { .. }), "{err}");
}

#[test]
fn racing_halves_are_caught() {
    let mut plans = plans(Collective::AllToAll, 2);
    let scratch = Region::new(Buf::Scratch, 0, 0);
    for plan in &mut plans {
        plan.scratch = Shape { blocks: 1 };
        steps(plan)[1] = Step::SendRecv {
            to: 1 - plan.rank,
            src: scratch,
            from: 1 - plan.rank,
            dst: scratch,
        };
    }
    let err = verify(&plans).unwrap_err();
    assert!(matches!(err, VerifyError::Race { .. }), "{err}");
}

#[test]
fn malformed_sets_are_rejected() {
    let good = plans(Collective::AllReduce, 3);
    let mut swapped = good.clone();
    swapped.swap(0, 1);
    let mut shape = good.clone();
    shape[1].output = Shape { blocks: 2 };
    let mut mixed = good.clone();
    mixed[2] = build(Algorithm::Ring, Collective::AllGather, 3, 2, 1).unwrap();
    let mut range = good.clone();
    steps(&mut range[0])[0] = Step::Send {
        to: 1,
        src: input(0, 3),
    };
    let mut channels = good.clone();
    channels[2].channels.push(Vec::new());
    for (name, set) in [
        ("swapped", swapped),
        ("shape", shape),
        ("mixed", mixed),
        ("range", range),
        ("channels", channels),
        ("empty", Vec::new()),
    ] {
        let err = verify(&set).unwrap_err();
        assert!(
            matches!(err, VerifyError::Malformed { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
fn p2p_pairs_are_checked() {
    let send = build(Algorithm::Ring, Collective::Send { peer: 2 }, 4, 1, 1).unwrap();
    let recv = build(Algorithm::Ring, Collective::Recv { peer: 1 }, 4, 2, 1).unwrap();
    verify_p2p(&send, &recv).unwrap();
    let wrong_peer = build(Algorithm::Ring, Collective::Recv { peer: 0 }, 4, 2, 1).unwrap();
    let err = verify_p2p(&send, &wrong_peer).unwrap_err();
    assert!(
        matches!(err, VerifyError::Malformed { rank: Some(2), .. }),
        "{err}"
    );
    // A send plan that forgets to send leaves the receiver waiting.
    let mut silent = send.clone();
    steps(&mut silent).clear();
    let err = verify_p2p(&silent, &recv).unwrap_err();
    assert!(matches!(err, VerifyError::Deadlock { .. }), "{err}");
    // Send/recv plans are not a collective set.
    let err = verify(&[send, recv]).unwrap_err();
    assert!(matches!(err, VerifyError::Malformed { .. }), "{err}");
}
