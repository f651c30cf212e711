//! The token stream, its train/validation split and deterministic batches.
//!
//! Sample `i` of the global batch of step `s` starts at an offset drawn from the stream keyed
//! by `(seed, split, s, i)`, so any rank can build any sample without drawing the others:
//! a data-parallel rank builds only its own samples, and every layout sees the same global
//! batch. Rank `r` of `dp` takes samples `r, r + dp, r + 2·dp, …` (PyTorch's
//! `DistributedSampler` order).

use crate::rng::SplitMix64;
use crate::tokenizer::{CharTokenizer, Tokenizer, TokenizerError, TokenizerKind, UnknownChar};

/// Which part of the stream a batch comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The first 90 %.
    Train,
    /// The last 10 %.
    Val,
}

/// A batch: `inputs` and `targets` are `samples × block` token ids, row-major; the targets
/// are the inputs shifted by one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Number of samples (rows).
    pub samples: usize,
    /// Tokens per sample.
    pub block: usize,
    /// Input ids.
    pub inputs: Vec<u32>,
    /// Next-token ids.
    pub targets: Vec<u32>,
    /// The global index of each row in its step's global batch.
    pub global_index: Vec<usize>,
}

/// The token stream split 90/10 into training and validation parts.
#[derive(Debug, Clone)]
pub struct Dataset {
    train: Vec<u32>,
    val: Vec<u32>,
}

/// Why a batch cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// A split holds too few tokens for one sample of `block + 1` tokens.
    TooShort {
        /// The split.
        split: Split,
        /// Its length in tokens.
        len: usize,
        /// The context length asked for.
        block: usize,
    },
    /// The global batch does not divide evenly among the data-parallel ranks.
    Uneven {
        /// The global batch size.
        batch: usize,
        /// The number of data-parallel ranks.
        dp: usize,
    },
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::TooShort { split, len, block } => write!(
                f,
                "the {split:?} split has {len} tokens, too few for a sample of {block}+1 tokens"
            ),
            DataError::Uneven { batch, dp } => write!(
                f,
                "global batch {batch} is not a multiple of the {dp} data-parallel ranks"
            ),
        }
    }
}

impl std::error::Error for DataError {}

impl Dataset {
    /// A text's character tokenizer (its own distinct characters) and the dataset of its
    /// tokens: what the CLI and the tests train on.
    pub fn from_text(text: &str) -> Result<(CharTokenizer, Dataset), UnknownChar> {
        let tok = CharTokenizer::from_text(text);
        let data = Dataset::new(tok.encode(text)?);
        Ok((tok, data))
    }

    /// A tokenizer of kind `kind` for `text` ([`Tokenizer::for_text`]) and the dataset of
    /// `text`'s tokens. [`TokenizerKind::Char`] gives [`Dataset::from_text`]'s tokens.
    pub fn from_text_with(
        text: &str,
        kind: TokenizerKind,
    ) -> Result<(Tokenizer, Dataset), TokenizerError> {
        let tok = Tokenizer::for_text(kind, text)?;
        let data = Dataset::new(tok.encode(text)?);
        Ok((tok, data))
    }

    /// Splits `tokens`: the first 90 % for training, the rest for validation.
    pub fn new(tokens: Vec<u32>) -> Self {
        let cut = tokens.len() * 9 / 10;
        let mut train = tokens;
        let val = train.split_off(cut);
        Dataset { train, val }
    }

    /// The tokens of `split`.
    pub fn tokens(&self, split: Split) -> &[u32] {
        match split {
            Split::Train => &self.train,
            Split::Val => &self.val,
        }
    }

    /// This rank's share of the global batch of `step`: samples `rank, rank + dp, …` of
    /// `batch`, each `block` tokens long.
    pub fn batch(
        &self,
        split: Split,
        seed: u64,
        step: u64,
        batch: usize,
        block: usize,
        (rank, dp): (usize, usize),
    ) -> Result<Batch, DataError> {
        if dp == 0 || batch % dp != 0 {
            return Err(DataError::Uneven { batch, dp });
        }
        let tokens = self.tokens(split);
        if tokens.len() <= block {
            return Err(DataError::TooShort {
                split,
                len: tokens.len(),
                block,
            });
        }
        // Number of valid start offsets: a sample needs block + 1 tokens.
        let starts = (tokens.len() - block) as u64;
        let global_index: Vec<usize> = (rank..batch).step_by(dp).collect();
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for &i in &global_index {
            let key = [split as u64, step, i as u64];
            let at = SplitMix64::keyed(seed, &key).below(starts) as usize;
            inputs.extend_from_slice(&tokens[at..at + block]);
            targets.extend_from_slice(&tokens[at + 1..at + block + 1]);
        }
        Ok(Batch {
            samples: global_index.len(),
            block,
            inputs,
            targets,
            global_index,
        })
    }
}
