//! The decoder's properties that parallel layouts rely on: causal attention, initial weights
//! that depend only on (seed, name), and deterministic generation.

use candle_core::{Device, Tensor};
use oxccl_train::model::{Gpt, GptConfig};
use oxccl_train::rng::SplitMix64;

fn tiny() -> GptConfig {
    let mut c = GptConfig::tiny(11);
    c.block_size = 8;
    c
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn a_token_only_affects_the_logits_of_later_positions() {
    let model = Gpt::new(tiny(), 3, &Device::Cpu).unwrap();
    let a: Vec<u32> = vec![1, 2, 3, 4, 5, 6, 7, 8];
    let mut b = a.clone();
    b[5] = 0;
    let logits = |ids: &[u32]| {
        let t = Tensor::from_slice(ids, (1, ids.len()), &Device::Cpu).unwrap();
        model.forward(&t).unwrap()
    };
    let (la, lb) = (logits(&a), logits(&b));
    let v = 11;
    let (fa, fb) = (flat(&la), flat(&lb));
    assert_eq!(
        fa[..5 * v],
        fb[..5 * v],
        "positions before the change moved"
    );
    assert_ne!(
        fa[5 * v..6 * v],
        fb[5 * v..6 * v],
        "the changed position did not move"
    );
}

#[test]
fn initial_weights_depend_on_seed_and_name_only() {
    let dev = Device::Cpu;
    let m1 = Gpt::new(tiny(), 42, &dev).unwrap();
    let m2 = Gpt::new(tiny(), 42, &dev).unwrap();
    let m3 = Gpt::new(tiny(), 43, &dev).unwrap();
    let mut untied_cfg = tiny();
    untied_cfg.untied_head = true;
    let untied = Gpt::new(untied_cfg, 42, &dev).unwrap();
    let names: Vec<&str> = m1.named_params().iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "wte.weight",
            "wpe.weight",
            "h.0.ln_1.weight",
            "h.0.ln_1.bias"
        ]
    );
    assert_eq!(names.len(), 2 + 2 * 12 + 2);
    assert_eq!(untied.named_params().last().unwrap().0, "lm_head.weight");
    for (((n, a), (_, b)), (_, c)) in m1
        .named_params()
        .iter()
        .zip(m2.named_params())
        .zip(m3.named_params())
    {
        assert_eq!(flat(a), flat(b), "{n} differs between runs");
        if n.ends_with("weight") && !n.contains("ln") {
            assert_ne!(flat(a), flat(c), "{n} ignores the seed");
        }
    }
    // Adding a head changes no other parameter.
    for ((n, a), (_, b)) in m1.named_params().iter().zip(untied.named_params()) {
        assert_eq!(flat(a), flat(b), "{n} moved when the head was untied");
    }
    let std = |t: &Tensor| {
        let x = flat(t);
        (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
    };
    let wte = &m1.named_params()[0].1;
    assert!((std(wte) - 0.02).abs() < 0.003, "wte std {}", std(wte));
}

#[test]
fn generation_is_deterministic_and_stays_in_the_vocabulary() {
    let model = Gpt::new(tiny(), 5, &Device::Cpu).unwrap();
    let run = |temp: f64| {
        let mut rng = SplitMix64::new(9);
        model.generate(&[1, 2], 20, temp, &mut rng).unwrap()
    };
    assert_eq!(run(0.0), run(0.0));
    assert_eq!(run(1.0), run(1.0));
    assert!(run(1.0).iter().all(|&t| t < 11));
    // Longer than the context: generation crops to block_size.
    assert_eq!(run(0.7).len(), 20);
}

/// The layer-by-layer backward pass (`model/segments.rs`, what data parallelism overlaps
/// with its all-reduce) hands over every parameter's gradient once, head first and
/// embeddings last, each equal to the whole-graph backward's, tied head or not.
#[test]
fn layer_by_layer_backward_matches_the_whole_graph() {
    for untied in [false, true] {
        let mut cfg = tiny();
        cfg.untied_head = untied;
        let model = Gpt::new(cfg, 5, &Device::Cpu).unwrap();
        let ids = Tensor::from_slice(
            &[1u32, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1],
            (2, 8),
            &Device::Cpu,
        )
        .unwrap();
        let targets = Tensor::from_slice(
            &[2u32, 3, 4, 5, 6, 7, 8, 9, 7, 6, 5, 4, 3, 2, 1, 0],
            (2, 8),
            &Device::Cpu,
        )
        .unwrap();
        let whole = (model.loss(&ids, &targets).unwrap() * 0.5).unwrap();
        let grads = whole.backward().unwrap();
        let named = model.named_params();
        let mut order = Vec::new();
        let loss = model
            .backward_by_layer(&ids, &targets, 0.5, None, |i, g| {
                let want = flat(grads.get(named[i].1.as_tensor()).unwrap());
                let got = flat(g.unwrap());
                for (k, (a, b)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * b.abs().max(1e-3);
                    assert!(
                        (a - b).abs() <= tol,
                        "{}[{k}]: {a} vs {b} (untied {untied})",
                        named[i].0
                    );
                }
                order.push(named[i].0.clone());
                Ok(())
            })
            .unwrap();
        assert_eq!(loss, whole.to_scalar::<f32>().unwrap());
        assert_eq!(
            order.len(),
            named.len(),
            "every parameter exactly once: {order:?}"
        );
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            named.len(),
            "a parameter came twice: {order:?}"
        );
        assert!(
            order[0].starts_with("ln_f") || order[0] == "lm_head.weight",
            "{order:?}"
        );
        assert!(
            order.last().unwrap().starts_with("wte") || order.last().unwrap().starts_with("wpe")
        );
        assert!(
            order.iter().position(|n| n.starts_with("h.1."))
                < order.iter().position(|n| n.starts_with("h.0."))
        );
    }
}
