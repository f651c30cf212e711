//! What the verifier reports when a set of plans is wrong.

use std::fmt;

use super::content::{Contribution, Show};
use crate::{Region, Step};

/// Where a step is: rank, channel, round and index in the channel's step list.
///
/// Checks made before the simulation (malformed steps) report round 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepAt {
    /// The rank whose plan holds the step.
    pub rank: u32,
    /// The channel.
    pub channel: u32,
    /// The round (the engine runs a channel's step list once per round).
    pub round: u32,
    /// Index in the channel's step list.
    pub step: usize,
    /// The step itself.
    pub what: Step,
}

impl fmt::Display for StepAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rank {} channel {} round {} step {} ({})",
            self.rank, self.channel, self.round, self.step, self.what
        )
    }
}

/// What a blocked step waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// No message has arrived from this rank.
    Message {
        /// The sending rank.
        from: u32,
    },
    /// The connection to this rank is full of unreceived messages.
    Room {
        /// The receiving rank.
        to: u32,
    },
    /// A one-sided read waits for this rank to post a phase of its window.
    Posted {
        /// The rank whose window is read.
        owner: u32,
        /// The phase the read needs.
        phase: u32,
    },
}

/// A rank that cannot progress when the verifier finds a deadlock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The step it is stuck in.
    pub at: StepAt,
    /// What the step waits for.
    pub waiting: Wait,
}

/// Why [`super::verify`] rejected a set of plans. Every variant names the rank(s) and, where
/// one is to blame, the step.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyError {
    /// The plans do not form a valid set: wrong count, rank or shape, a peer, block or split
    /// out of range, mismatched collectives, splits or channel counts, a local step whose
    /// source and destination splits differ.
    Malformed {
        /// The offending rank's plan, if one is to blame.
        rank: Option<u32>,
        /// What is wrong.
        reason: String,
    },
    /// A step sends to or receives from its own rank.
    SelfMessage {
        /// The step.
        at: StepAt,
    },
    /// No rank can progress while some have steps left. Lists every unfinished rank of the
    /// channel.
    Deadlock {
        /// The channel that deadlocked.
        channel: u32,
        /// Every rank with steps left, where it is stuck and on what.
        blocked: Vec<Blocked>,
    },
    /// A message was never received: all ranks finished, and it is still on its connection
    /// (the oldest such message is reported).
    UnmatchedSend {
        /// The channel.
        channel: u32,
        /// The sending rank.
        from: u32,
        /// The rank it was sent to.
        to: u32,
        /// The round it was sent in.
        round: u32,
        /// The region it was sent from.
        region: Region,
    },
    /// A step read an output or scratch chunk that nothing had written yet in this round.
    ReadUninitialised {
        /// The step.
        at: StepAt,
        /// The chunk.
        region: Region,
    },
    /// A step writes into the input buffer (the user's send buffer is read-only).
    WriteToInput {
        /// The step.
        at: StepAt,
        /// The chunk.
        region: Region,
    },
    /// A reduction combined two operands that both held the same contribution.
    DoubleContribution {
        /// The reducing step.
        at: StepAt,
        /// The contribution counted twice.
        contribution: Contribution,
    },
    /// A message landed in a chunk of another split or round than it was sent from, so the
    /// two sides disagree on its byte count.
    SplitMismatch {
        /// The receiving step.
        at: StepAt,
        /// The sending rank.
        from: u32,
        /// The round the message was sent in.
        sent_round: u32,
        /// The region it was sent from.
        sent: Region,
        /// The region the receiving step names.
        received: Region,
    },
    /// A step's source and destination are the same memory where they must differ: the two
    /// halves of a `SendRecv` would race on it, a `Reduce` would combine a chunk with itself.
    Race {
        /// The step.
        at: StepAt,
        /// The chunk both sides name (the destination, as the step names it).
        region: Region,
    },
    /// A one-sided read relies on a window region as posted in phase `phase`, but its owner
    /// writes the region again later in the round (in phase `written`): the reader may see
    /// either value.
    WindowRace {
        /// The reading step.
        at: StepAt,
        /// The rank owning the window.
        owner: u32,
        /// The window region.
        region: Region,
        /// The phase the reader waited for.
        phase: u32,
        /// The later phase in which the owner writes the region again.
        written: u32,
    },
    /// An output chunk does not hold what the collective's reference semantics define.
    WrongResult {
        /// The rank.
        rank: u32,
        /// The channel.
        channel: u32,
        /// The round.
        round: u32,
        /// The output chunk.
        region: Region,
        /// The contributions it must hold.
        expected: Vec<Contribution>,
        /// What it holds (`None`: never written).
        got: Option<Vec<Contribution>>,
    },
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed {
                rank: Some(r),
                reason,
            } => {
                write!(f, "malformed plan of rank {r}: {reason}")
            }
            VerifyError::Malformed { rank: None, reason } => write!(f, "malformed plans: {reason}"),
            VerifyError::SelfMessage { at } => write!(f, "{at} talks to its own rank"),
            VerifyError::Deadlock { channel, blocked } => {
                write!(f, "deadlock on channel {channel}:")?;
                for b in blocked {
                    match b.waiting {
                        Wait::Message { from } => {
                            write!(f, " {} waits for a message from rank {from};", b.at)?
                        }
                        Wait::Room { to } => write!(
                            f,
                            " {} waits for room on its connection to rank {to};",
                            b.at
                        )?,
                        Wait::Posted { owner, phase } => {
                            write!(f, " {} waits for rank {owner} to post phase {phase};", b.at)?
                        }
                    }
                }
                Ok(())
            }
            VerifyError::UnmatchedSend {
                channel,
                from,
                to,
                round,
                region,
            } => write!(
                f,
                "unmatched send: rank {from} sent {region} to rank {to} on channel \
                 {channel} in round {round}, and it was never received"
            ),
            VerifyError::ReadUninitialised { at, region } => {
                write!(f, "{at} reads {region} before anything wrote it")
            }
            VerifyError::WriteToInput { at, region } => {
                write!(f, "{at} writes {region} of the read-only input")
            }
            VerifyError::DoubleContribution { at, contribution } => {
                write!(f, "{at} counts contribution {contribution} twice")
            }
            VerifyError::SplitMismatch {
                at,
                from,
                sent_round,
                sent,
                received,
            } => write!(
                f,
                "{at} receives into {received} the message rank {from} sent from {sent} \
                 in round {sent_round}: splits or rounds differ"
            ),
            VerifyError::Race { at, region } => {
                write!(
                    f,
                    "{at}: source and destination are the same memory ({region})"
                )
            }
            VerifyError::WindowRace {
                at,
                owner,
                region,
                phase,
                written,
            } => write!(
                f,
                "{at} reads {region} of rank {owner}'s window as posted in phase {phase}, \
                 but rank {owner} writes it again in phase {written}"
            ),
            VerifyError::WrongResult {
                rank,
                channel,
                round,
                region,
                expected,
                got,
            } => {
                write!(
                    f,
                    "wrong result on rank {rank} channel {channel} round {round} in \
                     {region}: expected {}, ",
                    Show(expected)
                )?;
                match got {
                    None => f.write_str("never written"),
                    Some(got) => {
                        let missing: Vec<_> = expected
                            .iter()
                            .filter(|c| !got.contains(c))
                            .copied()
                            .collect();
                        let extra: Vec<_> = got
                            .iter()
                            .filter(|c| !expected.contains(c))
                            .copied()
                            .collect();
                        write!(
                            f,
                            "got {} (missing {}, extra {})",
                            Show(got),
                            Show(&missing),
                            Show(&extra)
                        )
                    }
                }
            }
        }
    }
}

impl std::error::Error for VerifyError {}
