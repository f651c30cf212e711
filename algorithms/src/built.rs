//! What an algorithm module hands to [`crate::build`].

use crate::Step;

/// One rank's plan body: every channel runs `steps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Built {
    /// Chunks per block's channel piece.
    pub(crate) splits: u32,
    /// Scratch blocks (each as long as the op's blocks).
    pub(crate) scratch: u32,
    /// The steps of every channel.
    pub(crate) steps: Vec<Step>,
}
