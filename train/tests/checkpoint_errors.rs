//! Damaged checkpoints: a missing tensor, a wrong shape or dtype, a truncated or absent
//! file and another model's checkpoint each fail with an error naming the file and the
//! tensor (or the mismatch).

use candle_core::{DType, Device, Tensor};
use oxccl_train::checkpoint::shard::model_state;
use oxccl_train::checkpoint::{self as ckpt, Checkpoint, Meta};
use oxccl_train::model::{Gpt, GptConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn model_config() -> GptConfig {
    let mut c = GptConfig::tiny(66);
    c.block_size = 16;
    c
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("oxccl-ckpt-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A fresh model's checkpoint (zero moments, step 0), written by one rank.
fn good() -> PathBuf {
    let model = Gpt::new(model_config(), 7, &Device::Cpu).unwrap();
    let zeros: Vec<Vec<f32>> = model
        .named_params()
        .iter()
        .map(|(_, v)| vec![0.0; v.elem_count()])
        .collect();
    let state = model_state(&model, &zeros, &zeros).unwrap();
    let path = tmp("good.safetensors");
    ckpt::save(&path, None, &Meta::new(model_config(), 7, 65, 0), state).unwrap();
    path
}

/// Loads parameters and moments of `path` into a fresh model of `cfg`.
fn load(path: &Path, cfg: GptConfig) -> String {
    let model = Gpt::new(cfg, 1, &Device::Cpu).unwrap();
    let c = Checkpoint::read(path).and_then(|c| {
        c.load_params(&model)?;
        c.local_moments(&model)
    });
    c.map(|_| String::new()).unwrap_or_else(|e| e.to_string())
}

/// Every tensor of `file` but `drop`, plus `extra`, written to `out`.
fn rewrite(file: &Path, out: &Path, drop: &str, extra: Option<(&str, Tensor)>) {
    let c = Checkpoint::read(file).unwrap();
    let mut all = BTreeMap::new();
    for n in c
        .names()
        .into_iter()
        .filter(|n| *n != drop && *n != ckpt::STEP)
    {
        all.insert(n.to_string(), c.tensor(n, DType::F32).unwrap().clone());
    }
    if let Some((n, t)) = extra {
        all.insert(n.to_string(), t);
    }
    ckpt::write(out, c.meta(), &all).unwrap();
}

#[test]
fn damaged_checkpoints_fail_naming_file_and_tensor() {
    let good = good();
    assert_eq!(load(&good, model_config()), "", "the good file loads");

    let missing = tmp("missing.safetensors");
    rewrite(&good, &missing, "adam_v.h.0.ln_1.weight", None);
    let e = load(&missing, model_config());
    assert!(
        e.contains("missing.safetensors") && e.contains("no tensor adam_v.h.0.ln_1.weight"),
        "{e}"
    );

    let shaped = tmp("shape.safetensors");
    let narrow = Tensor::zeros((3, 4), DType::F32, &Device::Cpu).unwrap();
    rewrite(
        &good,
        &shaped,
        "param.wpe.weight",
        Some(("param.wpe.weight", narrow)),
    );
    let e = load(&shaped, model_config());
    assert!(
        e.contains("shape.safetensors") && e.contains("tensor param.wpe.weight has shape [3, 4]"),
        "{e}"
    );

    let typed = tmp("dtype.safetensors");
    let ints = Tensor::zeros((3, 4), DType::U32, &Device::Cpu).unwrap();
    rewrite(
        &good,
        &typed,
        "param.wpe.weight",
        Some(("param.wpe.weight", ints)),
    );
    let e = load(&typed, model_config());
    assert!(
        e.contains("dtype.safetensors") && e.contains("param.wpe.weight has dtype U32"),
        "{e}"
    );

    let truncated = tmp("truncated.safetensors");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = load(&truncated, model_config());
    assert!(e.contains("truncated.safetensors"), "{e}");

    let e = load(&tmp("absent.safetensors"), model_config());
    assert!(e.contains("absent.safetensors"), "{e}");

    let mut other = model_config();
    other.n_layer += 1;
    let e = load(&good, other);
    assert!(
        e.contains("good.safetensors") && e.contains("does not match"),
        "{e}"
    );
    println!("last error: {e}");
    let _ = std::fs::remove_dir_all(good.parent().unwrap());
}
