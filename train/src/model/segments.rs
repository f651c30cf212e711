//! The backward pass one layer at a time, so the data-parallel all-reduce of the last
//! layers' gradients can start while the first layers' are still being computed.
//!
//! candle's `backward` returns every gradient at once. To get them layer by layer the
//! forward pass is cut into segments (embeddings, each block, the head with the loss), each
//! starting from a detached copy of the residual stream held as a [`Var`]. The backward pass
//! then runs segment by segment from the loss: segment `k`'s `backward` gives its
//! parameters' gradients and the gradient of its input, and the previous segment
//! back-propagates that with `(output · grad).sum()`, whose gradient with respect to the
//! output is `grad` exactly (the same cut the pipeline makes between stages). The
//! gradients equal the uncut pass's up to the order of float additions.

use super::{causal_mask, Dropout, Gpt};
use candle_core::{Result, Tensor, Var};

/// Where a parameter's gradient is completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Token and position embeddings (and, tied, the head: the embedding's gradient is
    /// complete only after both uses).
    Embed,
    Block(usize),
    /// Final LayerNorm and an untied head.
    Head,
}

fn owner(name: &str) -> Result<Owner> {
    if let Some(rest) = name.strip_prefix("h.") {
        let layer = rest.split('.').next().and_then(|i| i.parse().ok());
        return layer
            .map(Owner::Block)
            .ok_or_else(|| candle_core::Error::msg(format!("unexpected parameter {name}")));
    }
    Ok(match name {
        "wte.weight" | "wpe.weight" => Owner::Embed,
        _ => Owner::Head,
    })
}

impl Gpt {
    /// Forward and backward of `scale` × the mean loss of `ids` against `targets`, handing
    /// `ready(i, grad)` each parameter's gradient (`i` indexes [`Gpt::named_params`]; `None`
    /// when it got none) as soon as it is complete: the head's first, the embeddings' last.
    /// Returns the scaled loss. `drop`: dropout, as in [`Gpt::loss_with_dropout`].
    pub fn backward_by_layer(
        &self,
        ids: &Tensor,
        targets: &Tensor,
        scale: f64,
        drop: Option<&Dropout>,
        mut ready: impl FnMut(usize, Option<&Tensor>) -> Result<()>,
    ) -> Result<f32> {
        let (b, t) = ids.dims2()?;
        let owners = self
            .named
            .iter()
            .map(|(n, _)| owner(n))
            .collect::<Result<Vec<_>>>()?;
        // Forward, keeping each segment's input variable and output.
        let embedded = self.embed(ids, drop)?;
        let mask = causal_mask(t, ids.device())?;
        let mut blocks: Vec<(Var, Tensor)> = Vec::with_capacity(self.blocks.len());
        let mut x = embedded.clone();
        for blk in &self.blocks {
            let input = Var::from_tensor(&x.detach())?;
            x = blk.forward(input.as_tensor(), self.block_dims(b, t), &mask, drop)?;
            blocks.push((input, x.clone()));
        }
        let head_in = Var::from_tensor(&x.detach())?;
        let loss = (self.loss_of_logits(&self.head(head_in.as_tensor())?, targets)? * scale)?;
        let value = loss.to_scalar::<f32>()?;

        // Backward, segment by segment. The tied embedding collects the head's part here.
        let mut tied: Option<Tensor> = None;
        let mut grads = loss.backward()?;
        self.emit(&owners, Owner::Head, &grads, &mut tied, &mut ready)?;
        let mut upstream = input_grad(&grads, &head_in)?;
        for (layer, (input, output)) in blocks.iter().enumerate().rev() {
            grads = (output * &upstream)?.sum_all()?.backward()?;
            self.emit(&owners, Owner::Block(layer), &grads, &mut tied, &mut ready)?;
            upstream = input_grad(&grads, input)?;
        }
        grads = (embedded * upstream)?.sum_all()?.backward()?;
        self.emit(&owners, Owner::Embed, &grads, &mut tied, &mut ready)?;
        Ok(value)
    }

    /// Hands over the gradients of the parameters `at` completes; the head's part of a tied
    /// embedding is kept in `tied` until the embeddings' segment.
    fn emit(
        &self,
        owners: &[Owner],
        at: Owner,
        grads: &candle_core::backprop::GradStore,
        tied: &mut Option<Tensor>,
        ready: &mut impl FnMut(usize, Option<&Tensor>) -> Result<()>,
    ) -> Result<()> {
        let wte = self.wte.as_tensor();
        if at == Owner::Head && self.lm_head.is_none() {
            *tied = grads.get(wte).cloned();
        }
        for (i, (_, var)) in self.named.iter().enumerate() {
            if owners[i] != at {
                continue;
            }
            let grad = grads.get(var.as_tensor());
            if at == Owner::Embed && var.as_tensor().id() == wte.id() {
                let sum = match (grad, tied.take()) {
                    (Some(g), Some(h)) => Some((g + h)?),
                    (g, h) => g.cloned().or(h),
                };
                ready(i, sum.as_ref())?;
            } else {
                ready(i, grad)?;
            }
        }
        Ok(())
    }
}

/// The gradient that reached a segment's input.
fn input_grad(grads: &candle_core::backprop::GradStore, input: &Var) -> Result<Tensor> {
    grads
        .get(input.as_tensor())
        .cloned()
        .ok_or_else(|| candle_core::Error::msg("no gradient reached a segment's input"))
}
