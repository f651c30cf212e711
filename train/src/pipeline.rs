//! Pipeline parallelism: one rank's stage ([`GptStage`]) run over micro-batches with the
//! GPipe or the 1F1B schedule, activations sent to the next stage and their gradients back
//! with oxccl point-to-point operations over the pp group ([`crate::mesh`]).
//!
//! **Gradients.** A stage after the first wraps the received activation in a [`Var`], so
//! its backward pass yields the activation's gradient, which goes back to the previous
//! stage. A stage before the last backpropagates the received gradient `g` of its output
//! `y` by calling `backward` on `(y · g).sum()`, whose gradient with respect to `y` is `g`.
//! The last stage's loss of each micro-batch is scaled by `1 / (dp · M)`, so the sum of the
//! micro-batches' gradients (their [`GradStore`]s added up) over the dp ranks is the
//! gradient of the mean loss over the global batch, as without a pipeline.
//!
//! **Schedules** (Megatron-LM's formulation). GPipe runs all `M` forwards, then all `M`
//! backwards. 1F1B runs `pp − stage − 1` warm-up forwards, then alternates one forward and
//! one backward, then drains the remaining backwards, so a stage holds at most `pp − stage`
//! micro-batches' activations instead of `M`. Both process backwards in forward order, and
//! the sums of the gradients are the same up to rounding. A forward's send and the next
//! backward's receive (and a backward's send and the next forward's receive) go in one
//! oxccl [`Group`](oxccl::Group), as Megatron batches them: two neighbouring stages that
//! each send first would otherwise wait on each other. Both schedules idle for the
//! fraction [`bubble_fraction`] of a step.
//!
//! **Tied head.** With a tied head, the first and the last stage each hold a copy of the
//! token embedding; their gradients are summed over a 2-rank "embedding group" (the first
//! and last stage of the same `(dp, tp)`, split from the pp group) before the optimizer
//! step, so both copies get the gradient of the one shared parameter and stay equal.

use crate::model::{Dropout, GptStage};
use candle_core::backprop::GradStore;
use candle_core::{Error, Result, Tensor, Var};
use oxccl::{Communicator, ReduceOp};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The order of forwards and backwards over the micro-batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Schedule {
    /// All forwards, then all backwards.
    GPipe,
    /// Warm-up forwards, then one forward and one backward in turn, then the remaining
    /// backwards.
    #[default]
    OneFOneB,
}

impl std::str::FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gpipe" => Ok(Schedule::GPipe),
            "1f1b" => Ok(Schedule::OneFOneB),
            _ => Err(format!("unknown schedule {s:?} (gpipe or 1f1b)")),
        }
    }
}

impl std::fmt::Display for Schedule {
    /// The name `--schedule` takes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::GPipe => "gpipe",
            Schedule::OneFOneB => "1f1b",
        })
    }
}

/// The share of a step each stage idles with `pp` stages and `m` micro-batches (the
/// pipeline "bubble"), `(pp − 1) / (m + pp − 1)`, for both schedules.
pub fn bubble_fraction(pp: usize, m: usize) -> f64 {
    (pp.saturating_sub(1)) as f64 / (m + pp).saturating_sub(1).max(1) as f64
}

/// How a step is cut into micro-batches and scheduled over the pipeline stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipeConfig {
    /// Micro-batches per step: each dp rank's share of the global batch is split this many
    /// ways (it must divide evenly).
    pub micro_batches: usize,
    /// The order of the micro-batches' forwards and backwards.
    pub schedule: Schedule,
}

impl Default for PipeConfig {
    /// One micro-batch, 1F1B (with one stage and one micro-batch: the plain step).
    fn default() -> Self {
        PipeConfig {
            micro_batches: 1,
            schedule: Schedule::OneFOneB,
        }
    }
}

/// A micro-batch whose forward ran and whose backward has not.
struct InFlight {
    /// The received activation (not on the first stage).
    input: Option<Var>,
    /// The output to send on, or on the last stage the scaled loss.
    output: Tensor,
}

/// One rank's pipeline: its stage, the pp group and the embedding group.
pub struct Pipeline {
    stage: GptStage,
    comm: Option<Communicator>,
    embed: Option<Communicator>,
    schedule: Schedule,
    micro: usize,
    wait: Duration,
}

impl Pipeline {
    /// `stage` over the pp group `comm` (`None`: one stage), running `micro` micro-batches
    /// per step. Collective over the pp group (it splits off the embedding group).
    pub fn new(
        stage: GptStage,
        comm: Option<Communicator>,
        schedule: Schedule,
        micro: usize,
    ) -> Result<Self> {
        let mut comm = comm;
        let tied = !stage.config().untied_head;
        let (first, last) = (stage.is_first(), stage.is_last());
        let embed = match comm.as_mut() {
            Some(c) if tied => {
                let color = (first || last).then_some(0);
                c.split(color, stage.position().0 as i32)
                    .map_err(Error::wrap)?
            }
            _ => None,
        };
        if micro == 0 {
            candle_core::bail!("a pipeline needs at least one micro-batch");
        }
        Ok(Pipeline {
            stage,
            comm,
            embed,
            schedule,
            micro,
            wait: Duration::ZERO,
        })
    }

    /// The stage.
    pub fn stage(&self) -> &GptStage {
        &self.stage
    }

    /// Micro-batches per step.
    pub fn micro_batches(&self) -> usize {
        self.micro
    }

    /// Time spent in point-to-point transfers (waiting for a neighbour included) since the
    /// last call: the measured bubble plus the transfers themselves.
    pub fn take_wait_time(&mut self) -> Duration {
        std::mem::take(&mut self.wait)
    }

    /// Sends `send` to stage `to` and receives a `shape` tensor from stage `from`, in one
    /// group; either may be absent.
    fn p2p(
        &mut self,
        send: Option<(&Tensor, usize)>,
        recv: Option<((usize, usize), usize)>,
    ) -> Result<Option<Tensor>> {
        let (Some(comm), true) = (self.comm.as_mut(), send.is_some() || recv.is_some()) else {
            return Ok(None);
        };
        let start = Instant::now();
        let out = match send {
            Some((t, _)) => t.flatten_all()?.to_vec1::<f32>()?,
            None => Vec::new(),
        };
        let mut buf = vec![0f32; recv.map_or(0, |((r, c), _)| r * c)];
        let mut g = comm.group();
        if let Some((_, to)) = send {
            g.send(&out, to as u32).map_err(Error::wrap)?;
        }
        if let Some((_, from)) = recv {
            g.recv(&mut buf, from as u32).map_err(Error::wrap)?;
        }
        g.run().map_err(Error::wrap)?;
        self.wait += start.elapsed();
        let device = candle_core::Device::Cpu;
        recv.map(|(shape, _)| Tensor::from_vec(buf, shape, &device))
            .transpose()
    }

    /// One step's forward and backward passes over the `(b, t)` batch `ids`, `targets`
    /// split into micro-batches: the summed parameter gradients of this stage, and the sum
    /// over micro-batches of the loss times `scale` (the same on every stage). `drop`: the
    /// batch's dropout (each micro-batch takes its samples' masks).
    pub fn forward_backward(
        &mut self,
        ids: &Tensor,
        targets: &Tensor,
        scale: f64,
        drop: Option<&Dropout>,
    ) -> Result<(GradStore, f32)> {
        let (b, t) = ids.dims2()?;
        let m = self.micro;
        if b % m != 0 {
            candle_core::bail!("{b} samples do not split into {m} micro-batches");
        }
        let (stage, stages) = self.stage.position();
        let (first, last) = (self.stage.is_first(), self.stage.is_last());
        let act = (b / m * t, self.stage.config().n_embd);
        // Neighbours' pp ranks (the pp group is keyed by stage index), where there are any.
        let prev = (!first).then(|| stage - 1);
        let next = (!last).then_some(stage + 1);
        let warm = match self.schedule {
            Schedule::GPipe => m,
            Schedule::OneFOneB => (stages - stage - 1).min(m),
        };
        let mut queue = VecDeque::new();
        let mut acc = None;
        let mut loss = 0f32;
        for i in 0..warm {
            let x = self.p2p(None, prev.map(|p| (act, p)))?;
            let f = self.forward_micro(i, x, (ids, targets), scale, drop, &mut loss)?;
            self.p2p(next.map(|n| (&f.output, n)), None)?;
            queue.push_back(f);
        }
        let steady = m - warm;
        let mut x = match steady {
            0 => None,
            _ => self.p2p(None, prev.map(|p| (act, p)))?,
        };
        for k in 0..steady {
            let io = (ids, targets);
            let f = self.forward_micro(warm + k, x.take(), io, scale, drop, &mut loss)?;
            let g = self.p2p(next.map(|n| (&f.output, n)), next.map(|n| (act, n)))?;
            queue.push_back(f);
            let done = queue.pop_front().expect("a forward is in flight");
            let dx = self.backward_micro(done, g, &mut acc)?;
            let more = k + 1 < steady;
            let send = prev.zip(dx.as_ref()).map(|(p, d)| (d, p));
            x = self.p2p(send, prev.filter(|_| more).map(|p| (act, p)))?;
        }
        while let Some(done) = queue.pop_front() {
            let g = self.p2p(None, next.map(|n| (act, n)))?;
            let dx = self.backward_micro(done, g, &mut acc)?;
            self.p2p(prev.zip(dx.as_ref()).map(|(p, d)| (d, p)), None)?;
        }
        let grads = acc.ok_or_else(|| Error::msg("pipeline: no backward ran"))?;
        Ok((grads, self.sum_over_stages(loss)?))
    }

    /// Forward of micro-batch `i`: `x` is the received activation (`None` on the first
    /// stage); the last stage adds its scaled loss to `loss`.
    fn forward_micro(
        &mut self,
        i: usize,
        x: Option<Tensor>,
        (ids, targets): (&Tensor, &Tensor),
        scale: f64,
        drop: Option<&Dropout>,
        loss: &mut f32,
    ) -> Result<InFlight> {
        let (b, t) = ids.dims2()?;
        let mb = b / self.micro;
        let input = x.map(|x| Var::from_tensor(&x)).transpose()?;
        let drop = drop.map(|d| d.narrow(i * mb, mb)).transpose()?;
        let y = match &input {
            Some(v) => self.stage.forward(v.as_tensor(), (mb, t), drop.as_ref())?,
            None => {
                let ids = ids.narrow(0, i * mb, mb)?;
                self.stage.forward(&ids, (mb, t), drop.as_ref())?
            }
        };
        let output = match self.stage.is_last() {
            true => {
                let l = (self.stage.loss(&y, &targets.narrow(0, i * mb, mb)?)? * scale)?;
                *loss += l.to_scalar::<f32>()?;
                l
            }
            false => y,
        };
        Ok(InFlight { input, output })
    }

    /// Backward of a micro-batch given its output's gradient `g` (`None` on the last
    /// stage); adds the parameters' gradients to `acc` and returns the input's gradient.
    fn backward_micro(
        &mut self,
        done: InFlight,
        g: Option<Tensor>,
        acc: &mut Option<GradStore>,
    ) -> Result<Option<Tensor>> {
        let grads = match g {
            Some(g) => (done.output * g)?.sum_all()?.backward()?,
            None => done.output.backward()?,
        };
        let dx = match &done.input {
            Some(v) => Some(
                grads
                    .get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| Error::msg("pipeline: no gradient for the activation"))?,
            ),
            None => None,
        };
        match acc {
            None => *acc = Some(grads),
            Some(sum) => {
                for (_, v) in self.stage.named_params() {
                    if let Some(new) = grads.get(v.as_tensor()) {
                        let total = match sum.get(v.as_tensor()) {
                            Some(old) => (old + new)?,
                            None => new.clone(),
                        };
                        sum.insert(v.as_tensor(), total);
                    }
                }
            }
        }
        Ok(dx)
    }

    /// Sums `x` over the stages (only the last stage's is nonzero, so every stage gets
    /// exactly its value).
    fn sum_over_stages(&mut self, x: f32) -> Result<f32> {
        let mut buf = [if self.stage.is_last() { x } else { 0.0 }];
        if let Some(c) = self.comm.as_mut() {
            c.all_reduce_in_place(&mut buf, ReduceOp::Sum)
                .map_err(Error::wrap)?;
        }
        Ok(buf[0])
    }

    /// Mean loss of the `(b, t)` batch without gradients (validation), as one micro-batch;
    /// the same on every stage.
    pub fn forward_only(&mut self, ids: &Tensor, targets: &Tensor) -> Result<f32> {
        let (b, t) = ids.dims2()?;
        let (stage, _) = self.stage.position();
        let (first, last) = (self.stage.is_first(), self.stage.is_last());
        let act = (b * t, self.stage.config().n_embd);
        let x = self.p2p(None, (!first).then(|| (act, stage - 1)))?;
        let y = match &x {
            Some(x) => self.stage.forward(x, (b, t), None)?,
            None => self.stage.forward(&ids.detach(), (b, t), None)?,
        };
        let loss = match last {
            true => self.stage.loss(&y, targets)?.to_scalar::<f32>()?,
            false => {
                self.p2p(Some((&y, stage + 1)), None)?;
                0.0
            }
        };
        self.sum_over_stages(loss)
    }

    /// Adds up the token embedding's gradients of the first and the last stage (tied head;
    /// see the module doc). Collective over the embedding group; nothing without one.
    pub fn sum_embedding_grads(&mut self, grads: &mut GradStore) -> Result<()> {
        let (Some(comm), Some(wte)) = (self.embed.as_mut(), self.stage.wte()) else {
            return Ok(());
        };
        let t = wte.as_tensor();
        let mut buf = match grads.get(t) {
            Some(g) => g.flatten_all()?.to_vec1::<f32>()?,
            None => vec![0.0; t.elem_count()],
        };
        comm.all_reduce_in_place(&mut buf, ReduceOp::Sum)
            .map_err(Error::wrap)?;
        grads.insert(t, Tensor::from_vec(buf, t.shape(), t.device())?);
        Ok(())
    }
}
