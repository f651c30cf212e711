//! Tensor-parallel layers against the unsharded candle computation: ranks are threads on a
//! real oxccl communicator (1 rank, the trivial case, 2, and 3 for an odd split). For every layer the outputs,
//! the input gradients and the weight-shard gradients (compared with the matching slices of
//! the unsharded gradients) agree to 1e-5 relative to the largest reference magnitude.
//!
//! The negative checks (`*_without_*`) drop one collective and assert that the result is
//! then wrong with 2 ranks, so the comparisons above can fail.

use candle_core::{Module, Result, Tensor, Var, D};
use oxccl::{Communicator, Config, UniqueId};
use oxccl_train::tp::{
    copy_to_tp, reduce_from_tp, shard_qkv, vocab_parallel_cross_entropy, ColumnParallelLinear,
    ParallelMlp, ParallelSelfAttention, RowParallelLinear, TpGroup, VocabParallelEmbedding,
};
use std::time::Duration;

const DEV: candle_core::Device = candle_core::Device::Cpu;

/// Runs `f` on every rank of an `n`-rank tp group, each rank in its own thread.
fn job(n: u32, f: impl Fn(&TpGroup) -> Result<()> + Send + Sync + Clone + 'static) {
    let mut cfg = Config::default();
    cfg.timeout = Duration::from_secs(30);
    let id = UniqueId::new("127.0.0.1:0".parse().unwrap(), cfg.timeout).unwrap();
    let handles: Vec<_> = (0..n)
        .map(|r| {
            let (f, cfg) = (f.clone(), cfg.clone());
            std::thread::spawn(move || {
                let comm = Communicator::init(id, n, r, cfg).expect("init");
                f(&TpGroup::new(comm))
            })
        })
        .collect();
    for (r, h) in handles.into_iter().enumerate() {
        h.join()
            .unwrap_or_else(|_| panic!("rank {r} of {n} panicked"))
            .unwrap_or_else(|e| panic!("rank {r} of {n}: {e}"));
    }
}

/// Every test runs with 1 rank and with 2.
fn each_size(f: impl Fn(&TpGroup) -> Result<()> + Send + Sync + Clone + 'static) {
    for n in [1, 2, 3] {
        job(n, f.clone());
    }
}

/// Deterministic values in [-1, 1) (SplitMix64), the same on every rank without sharing.
fn det(dims: &[usize], seed: u64) -> Tensor {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let v: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(v, dims, &DEV).unwrap()
}

fn var(t: &Tensor) -> Var {
    Var::from_tensor(&t.detach()).unwrap()
}

/// Largest |got − want| relative to the largest |want| (f32 sums in another order differ
/// by a few ulps of the largest term, not of each element).
fn rel_err(got: &Tensor, want: &Tensor) -> f32 {
    assert_eq!(got.dims(), want.dims(), "shapes differ");
    let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
    let scale = want.abs().unwrap().max_all().unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-30)
}

fn assert_close(what: &str, g: &TpGroup, got: &Tensor, want: &Tensor) {
    let e = rel_err(got, want);
    assert!(
        e <= 1e-5,
        "{what} (rank {} of {}): relative error {e}",
        g.rank(),
        g.size()
    );
}

/// This rank's slice `[r·n/tp, (r+1)·n/tp)` of dimension `dim`.
fn slice(t: &Tensor, dim: usize, g: &TpGroup) -> Tensor {
    let per = t.dim(dim).unwrap() / g.size();
    t.narrow(dim, g.rank() * per, per).unwrap()
}

/// Gradient of `t` in `grads`.
fn grad(grads: &candle_core::backprop::GradStore, t: &Tensor) -> Tensor {
    grads.get(t).expect("no gradient").clone()
}

/// `x·wᵀ + b`, the unsharded linear layer.
fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Tensor {
    x.broadcast_matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(b)
        .unwrap()
}

#[test]
fn column_parallel_linear_matches_unsharded() {
    each_size(|g| {
        let (wf, bf, x) = (det(&[12, 6], 1), det(&[12], 2), det(&[2, 3, 6], 3));
        let r = det(&[2, 3, 12], 4);
        let (wv, bv, xv) = (var(&wf), var(&bf), var(&x));
        let want = linear(&xv, &wv, &bv);
        let gw = (&want * &r)?.sum_all()?.backward()?;
        for gather in [false, true] {
            let layer = ColumnParallelLinear::from_full(&wf, Some(&bf), gather, g)?;
            let xp = var(&x);
            let y = layer.forward(&xp)?;
            // Without gather_output each rank's loss is its slice's share of the sum.
            let (want_y, r_y) = if gather {
                (want.clone(), r.clone())
            } else {
                (slice(&want, 2, g), slice(&r, 2, g))
            };
            assert_close("output", g, &y, &want_y);
            let gp = (&y * &r_y)?.sum_all()?.backward()?;
            assert_close("input grad", g, &grad(&gp, &xp), &grad(&gw, &xv));
            let w_grad = grad(&gp, layer.weight());
            assert_close("weight grad", g, &w_grad, &slice(&grad(&gw, &wv), 0, g));
            let b_grad = grad(&gp, layer.bias().unwrap());
            assert_close("bias grad", g, &b_grad, &slice(&grad(&gw, &bv), 0, g));
            let (w_full, b_full) = layer.full_weight()?;
            assert_close("full weight", g, &w_full, &wf);
            assert_close("full bias", g, &b_full.unwrap(), &bf);
        }
        Ok(())
    });
}

#[test]
fn column_parallel_without_f_gives_wrong_input_grad() {
    job(2, |g| {
        let (wf, bf, x, r) = (
            det(&[8, 6], 1),
            det(&[8], 2),
            det(&[5, 6], 3),
            det(&[5, 8], 4),
        );
        let (wv, bv, xv) = (var(&wf), var(&bf), var(&x));
        let gw = (linear(&xv, &wv, &bv) * &r)?.sum_all()?.backward()?;
        let (w, b) = (slice(&wf, 0, g), slice(&bf, 0, g));
        let run = |with_f: bool| -> Result<Tensor> {
            let xp = var(&x);
            let xin = if with_f {
                copy_to_tp(&xp, g)?
            } else {
                xp.as_tensor().clone()
            };
            let y = linear(&xin, &w, &b);
            let gp = (y * slice(&r, 1, g))?.sum_all()?.backward()?;
            Ok(grad(&gp, &xp))
        };
        assert!(rel_err(&run(true)?, &grad(&gw, &xv)) <= 1e-5);
        let e = rel_err(&run(false)?, &grad(&gw, &xv));
        assert!(
            e > 1e-2,
            "input grad without f should be partial, error {e}"
        );
        Ok(())
    });
}

#[test]
fn row_parallel_linear_matches_unsharded() {
    each_size(|g| {
        let (wf, bf, x) = (det(&[6, 12], 5), det(&[6], 6), det(&[2, 3, 12], 7));
        let r = det(&[2, 3, 6], 8);
        let (wv, bv, xv) = (var(&wf), var(&bf), var(&x));
        let want = linear(&xv, &wv, &bv);
        let gw = (&want * &r)?.sum_all()?.backward()?;
        for parallel_input in [true, false] {
            let layer = RowParallelLinear::from_full(&wf, Some(&bf), parallel_input, g)?;
            let (xp, want_xg) = if parallel_input {
                (var(&slice(&x, 2, g)), slice(&grad(&gw, &xv), 2, g))
            } else {
                (var(&x), grad(&gw, &xv))
            };
            let y = layer.forward(&xp)?;
            assert_close("output", g, &y, &want);
            let gp = (&y * &r)?.sum_all()?.backward()?;
            assert_close("input grad", g, &grad(&gp, &xp), &want_xg);
            let w_grad = grad(&gp, layer.weight());
            assert_close("weight grad", g, &w_grad, &slice(&grad(&gw, &wv), 1, g));
            let b_grad = grad(&gp, layer.bias().unwrap());
            assert_close("bias grad", g, &b_grad, &grad(&gw, &bv));
            let (w_full, _) = layer.full_weight()?;
            assert_close("full weight", g, &w_full, &wf);
        }
        Ok(())
    });
}

#[test]
fn row_parallel_without_g_gives_wrong_output() {
    job(2, |g| {
        let (wf, x) = (det(&[6, 8], 5), det(&[4, 8], 7));
        let want = x.matmul(&wf.t()?)?;
        let partial = slice(&x, 1, g).matmul(&slice(&wf, 1, g).t()?)?;
        let e = rel_err(&partial, &want);
        assert!(e > 1e-2, "a partial sum should differ, error {e}");
        let layer = RowParallelLinear::from_full(&wf, None, true, g)?;
        assert_close("output", g, &layer.forward(&slice(&x, 1, g))?, &want);
        Ok(())
    });
}

#[test]
fn column_then_row_mlp_matches_unsharded() {
    each_size(|g| {
        let (w1, b1, w2, b2) = (
            det(&[12, 6], 9),
            det(&[12], 10),
            det(&[6, 12], 11),
            det(&[6], 12),
        );
        let (x, r) = (det(&[2, 3, 6], 13), det(&[2, 3, 6], 14));
        let vs: Vec<Var> = [&w1, &b1, &w2, &b2, &x].iter().map(|t| var(t)).collect();
        let h = linear(&vs[4], &vs[0], &vs[1]).gelu()?;
        let want = linear(&h, &vs[2], &vs[3]);
        let gw = (&want * &r)?.sum_all()?.backward()?;

        let mlp = ParallelMlp::from_full((&w1, Some(&b1)), (&w2, Some(&b2)), g)?;
        let (fc, proj) = (mlp.fc(), mlp.proj());
        let xp = var(&x);
        let y = mlp.forward(&xp)?;
        assert_close("output", g, &y, &want);
        let gp = (&y * &r)?.sum_all()?.backward()?;
        assert_close("input grad", g, &grad(&gp, &xp), &grad(&gw, &vs[4]));
        let pairs = [
            (fc.weight(), slice(&grad(&gw, &vs[0]), 0, g)),
            (fc.bias().unwrap(), slice(&grad(&gw, &vs[1]), 0, g)),
            (proj.weight(), slice(&grad(&gw, &vs[2]), 1, g)),
            (proj.bias().unwrap(), grad(&gw, &vs[3])),
        ];
        for (i, (p, want_g)) in pairs.iter().enumerate() {
            assert_close(&format!("parameter {i} grad"), g, &grad(&gp, p), want_g);
        }
        Ok(())
    });
}

/// Unsharded causal self-attention with a fused qkv projection (GPT-2 layout).
fn attention_reference(
    x: &Tensor,
    qkv: (&Tensor, &Tensor),
    proj: (&Tensor, &Tensor),
    nh: usize,
) -> Tensor {
    let (b, t, c) = x.dims3().unwrap();
    let hd = c / nh;
    let fused = linear(x, qkv.0, qkv.1);
    let heads = |i: usize| {
        fused
            .narrow(2, i * c, c)
            .unwrap()
            .reshape((b, t, nh, hd))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
    };
    let (q, k, v) = (heads(0), heads(1), heads(2));
    let scores = (q.matmul(&k.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
    let mask: Vec<f32> = (0..t * t)
        .map(|ij| {
            if ij % t > ij / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), &DEV).unwrap();
    let p = candle_nn::ops::softmax(&scores.broadcast_add(&mask).unwrap(), D::Minus1).unwrap();
    let y = p
        .matmul(&v)
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .reshape((b, t, c))
        .unwrap();
    linear(&y, proj.0, proj.1)
}

#[test]
fn head_sharded_attention_matches_unsharded() {
    each_size(|g| {
        let (c, nh) = (12, 6);
        let (wqkv, bqkv) = (det(&[3 * c, c], 15), det(&[3 * c], 16));
        let (wp, bp) = (det(&[c, c], 17), det(&[c], 18));
        let (x, r) = (det(&[2, 5, c], 19), det(&[2, 5, c], 20));
        let vs: Vec<Var> = [&wqkv, &bqkv, &wp, &bp, &x]
            .iter()
            .map(|t| var(t))
            .collect();
        let want = attention_reference(&vs[4], (&vs[0], &vs[1]), (&vs[2], &vs[3]), nh);
        let gw = (&want * &r)?.sum_all()?.backward()?;

        let attn = ParallelSelfAttention::from_full(&wqkv, Some(&bqkv), &wp, Some(&bp), nh, g)?;
        let xp = var(&x);
        let y = attn.forward(&xp)?;
        assert_close("output", g, &y, &want);
        let gp = (&y * &r)?.sum_all()?.backward()?;
        assert_close("input grad", g, &grad(&gp, &xp), &grad(&gw, &vs[4]));
        let pairs = [
            (attn.qkv().weight(), shard_qkv(&grad(&gw, &vs[0]), nh, g)?),
            (
                attn.qkv().bias().unwrap(),
                shard_qkv(&grad(&gw, &vs[1]), nh, g)?,
            ),
            (attn.proj().weight(), slice(&grad(&gw, &vs[2]), 1, g)),
            (attn.proj().bias().unwrap(), grad(&gw, &vs[3])),
        ];
        for (i, (p, want_g)) in pairs.iter().enumerate() {
            assert_close(&format!("parameter {i} grad"), g, &grad(&gp, p), want_g);
        }
        Ok(())
    });
}

#[test]
fn shard_qkv_takes_each_ranks_heads_from_q_k_and_v() {
    job(2, |g| {
        // Row i of a [3·4, 1] fused weight holds i: C = 4, 2 heads of 2, one head per rank.
        let full = Tensor::arange(0f32, 12.0, &DEV)?.reshape((12, 1))?;
        let got = shard_qkv(&full, 2, g)?.flatten_all()?.to_vec1::<f32>()?;
        let want: [f32; 6] = match g.rank() {
            0 => [0.0, 1.0, 4.0, 5.0, 8.0, 9.0],
            _ => [2.0, 3.0, 6.0, 7.0, 10.0, 11.0],
        };
        assert_eq!(got, want);
        Ok(())
    });
}

#[test]
fn vocab_parallel_embedding_matches_unsharded() {
    each_size(|g| {
        let wf = det(&[12, 4], 21);
        // Repeats (gradients accumulate) and ids on both halves of the vocabulary.
        let ids = Tensor::from_vec(vec![0u32, 11, 3, 3, 5, 7, 9, 1, 4, 0], (2, 5), &DEV)?;
        let r = det(&[2, 5, 4], 22);
        let wv = var(&wf);
        let want = wv.embedding(&ids.flatten_all()?)?.reshape((2, 5, 4))?;
        let gw = (&want * &r)?.sum_all()?.backward()?;

        let emb = VocabParallelEmbedding::from_full(&wf, g)?;
        let y = emb.forward(&ids)?;
        assert_close("output", g, &y, &want);
        let gp = (&y * &r)?.sum_all()?.backward()?;
        assert_close(
            "weight grad",
            g,
            &grad(&gp, emb.weight()),
            &slice(&grad(&gw, &wv), 0, g),
        );
        assert_close("full weight", g, &emb.full_weight()?, &wf);
        // An id outside the vocabulary is an error on every rank, before any collective.
        let bad = Tensor::from_vec(vec![12u32], 1, &DEV)?;
        assert!(emb.forward(&bad).is_err());
        Ok(())
    });
}

#[test]
fn vocab_parallel_cross_entropy_matches_unsharded() {
    each_size(|g| {
        // Large logits: the loss is only right if the global max shift is applied.
        let logits = (det(&[6, 12], 23) * 40.0)?;
        let targets = Tensor::from_vec(vec![0u32, 11, 4, 5, 2, 8], 6, &DEV)?;
        let lv = var(&logits);
        let want = candle_nn::loss::cross_entropy(&lv, &targets)?;
        let gw = want.backward()?;

        let lp = var(&slice(&logits, 1, g));
        let loss = vocab_parallel_cross_entropy(&lp, &targets, g)?;
        assert_close("loss", g, &loss, &want);
        let gp = loss.backward()?;
        assert_close(
            "logit grad",
            g,
            &grad(&gp, &lp),
            &slice(&grad(&gw, &lv), 1, g),
        );
        Ok(())
    });
}

#[test]
fn column_parallel_lm_head_with_vocab_parallel_loss_matches_unsharded() {
    each_size(|g| {
        let (w, x) = (det(&[12, 4], 24), det(&[2, 3, 4], 25));
        let targets = Tensor::from_vec(vec![1u32, 8, 3, 6, 0, 11], (2, 3), &DEV)?;
        let (wv, xv) = (var(&w), var(&x));
        let logits = xv.broadcast_matmul(&wv.t()?)?.reshape((6, 12))?;
        let want = candle_nn::loss::cross_entropy(&logits, &targets.flatten_all()?)?;
        let gw = want.backward()?;

        let head = ColumnParallelLinear::from_full(&w, None, false, g)?;
        let xp = var(&x);
        let loss = vocab_parallel_cross_entropy(&head.forward(&xp)?, &targets, g)?;
        assert_close("loss", g, &loss, &want);
        let gp = loss.backward()?;
        assert_close("input grad", g, &grad(&gp, &xp), &grad(&gw, &xv));
        assert_close(
            "weight grad",
            g,
            &grad(&gp, head.weight()),
            &slice(&grad(&gw, &wv), 0, g),
        );
        Ok(())
    });
}

#[test]
fn shards_that_do_not_split_evenly_are_errors() {
    job(2, |g| {
        let w = det(&[7, 6], 26);
        assert!(ColumnParallelLinear::from_full(&w, None, false, g).is_err());
        assert!(RowParallelLinear::from_full(&w.t()?, None, true, g).is_err());
        assert!(VocabParallelEmbedding::from_full(&w, g).is_err());
        // 3 heads of a [3·6, 6] fused weight cannot split over 2 ranks.
        assert!(shard_qkv(&det(&[18, 6], 27), 3, g).is_err());
        Ok(())
    });
}

#[test]
fn oxccl_errors_become_candle_errors_with_oxccl_message() {
    job(2, |g| {
        let handle = g.communicator().lock().unwrap().abort_handle();
        handle.abort();
        let err = reduce_from_tp(&det(&[4], 28), g).unwrap_err().to_string();
        assert!(
            err.contains("tensor-parallel all-reduce on rank") && err.contains("abort"),
            "{err}"
        );
        Ok(())
    });
}
