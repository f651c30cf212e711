//! A [`Trainer`]'s checkpoints: saved from any layout, resumed into any other (the format
//! and the collectives are [`crate::checkpoint`]'s).

use super::{Net, Optimizer, Trainer};
use crate::checkpoint::{self, shard, Checkpoint, Meta};
use crate::tokenizer::TokenizerInfo;
use crate::tp::TpGroup;
use candle_core::{Error, Result, Var};
use oxccl::Communicator;
use std::path::Path;

/// What a trainer keeps for checkpoints.
pub(super) struct State {
    /// This rank's tp group (shards are all-gathered and cut over it).
    tp: Option<TpGroup>,
    /// A copy of the pp group: the stages' (dp 0, tp 0) ranks merge a checkpoint over it.
    comm: Option<Communicator>,
    /// The first step [`Trainer::train`] runs (0, or the step a checkpoint resumed at).
    pub(super) start: u64,
}

impl State {
    /// The state of a rank of tp group `tp` and pp group `pp`; collective over `pp` (it is
    /// split into a copy).
    pub(super) fn new(tp: Option<TpGroup>, pp: Option<&mut Communicator>) -> Result<Self> {
        let comm = match pp {
            Some(c) => c.split(Some(0), c.rank() as i32).map_err(Error::wrap)?,
            None => None,
        };
        Ok(State { tp, comm, start: 0 })
    }
}

impl Trainer {
    /// The first step [`Trainer::train`] runs: 0, or the step [`Trainer::resume`] restored.
    pub fn start_step(&self) -> u64 {
        self.ckpt.start
    }

    /// This rank's parameters with their names (the model's, or its pipeline stage's).
    fn named(&self) -> &[(String, Var)] {
        match &self.net {
            Net::Whole(g) => g.named_params(),
            Net::Pipe(p) => p.stage().named_params(),
        }
    }

    /// Saves a checkpoint of the state after `steps` steps to `path` (see
    /// [`crate::checkpoint`]): full parameters and AdamW moments (tp shards all-gathered,
    /// ZeRO shards all-gathered over dp), each stage's from its (dp 0, tp 0) rank, merged on
    /// world rank 0, which writes the file. `tokenizer` is the run's tokenizer (a
    /// `&Tokenizer`, or a bare `usize`: a character tokenizer's vocabulary before padding),
    /// which [`Trainer::resume_with_tokenizer`] checks. Collective: every rank must call it.
    pub fn save_checkpoint(
        &mut self,
        path: &Path,
        tokenizer: impl Into<TokenizerInfo>,
        steps: u64,
    ) -> Result<()> {
        let tokenizer = tokenizer.into();
        let (m, v) = match &mut self.opt {
            Optimizer::Full(opt) => {
                let (m, v) = opt.moments();
                (m.to_vec(), v.to_vec())
            }
            Optimizer::Zero(zero) => zero.gather_moments()?,
        };
        let state = shard::named_state(self.named(), self.ckpt.tp.as_ref(), &m, &v)?;
        if self.coord.dp != 0 || self.coord.tp != 0 {
            return Ok(());
        }
        let meta = Meta::new(self.cfg.model, self.cfg.seed, tokenizer, steps);
        checkpoint::save(path, self.ckpt.comm.as_mut(), &meta, state)
    }

    /// Restores parameters (this rank's shards, cut by name), AdamW moments and the step
    /// count from the checkpoint at `path`, written by any layout; [`Trainer::train`] then
    /// continues at the saved step, which this returns. Errors name the file and tensor, or
    /// the mismatching model or seed. Not collective. The tokenizer is not checked: see
    /// [`Trainer::resume_with_tokenizer`].
    pub fn resume(&mut self, path: &Path) -> Result<u64> {
        self.restore(path, None)
    }

    /// [`Trainer::resume`], after checking that the checkpoint was trained with `tokenizer`
    /// (kind and vocabulary size; a bare `usize` is a character tokenizer's): the error
    /// names both tokenizers.
    pub fn resume_with_tokenizer(
        &mut self,
        path: &Path,
        tokenizer: impl Into<TokenizerInfo>,
    ) -> Result<u64> {
        self.restore(path, Some(tokenizer.into()))
    }

    /// Restores from `path`, checking the tokenizer first when one is given.
    fn restore(&mut self, path: &Path, tokenizer: Option<TokenizerInfo>) -> Result<u64> {
        let c = Checkpoint::read(path)?;
        let saved = c.meta().tokenizer;
        if let Some(ours) = tokenizer.filter(|t| *t != saved) {
            candle_core::bail!(
                "checkpoint {} was trained with {saved}, this run uses {ours}; resume with \
                 the checkpoint's tokenizer",
                path.display()
            );
        }
        c.check_model(&self.cfg.model)?;
        if c.meta().seed != self.cfg.seed {
            candle_core::bail!(
                "checkpoint {}: seed {} differs from this run's {} (batches are keyed by it)",
                path.display(),
                c.meta().seed,
                self.cfg.seed
            );
        }
        let group = self.ckpt.tp.as_ref();
        c.load_named(self.named(), group)?;
        let (m, v) = c.moments_named(self.named(), group)?;
        let step = c.meta().step;
        match &mut self.opt {
            Optimizer::Full(opt) => opt.restore(m, v, step)?,
            Optimizer::Zero(zero) => zero.restore(&m, &v, step)?,
        }
        self.ckpt.start = step;
        Ok(step)
    }
}
