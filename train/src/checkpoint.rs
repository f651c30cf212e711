//! Checkpoints in safetensors that save from any layout and resume into any other.
//!
//! A file holds FULL (unsharded) f32 tensors under stable names, so it does not depend on
//! the `pp × dp × tp` layout that wrote it:
//!
//! | tensor            | what                                                     |
//! |-------------------|----------------------------------------------------------|
//! | `param.<name>`    | parameter `<name>` (names as [`Gpt::named_params`])       |
//! | `adam_m.<name>`   | AdamW's first moment of `<name>`, same shape              |
//! | `adam_v.<name>`   | AdamW's second moment of `<name>`, same shape             |
//! | `step`            | optimizer steps taken, one u32 (candle has no u64)         |
//!
//! and the safetensors header's `__metadata__` has one entry, [`META_KEY`], a JSON object
//! ([`Meta`]): format version, model config, seed, the tokenizer and its real vocabulary
//! size (before padding) and the step, which is also the data position (batches are keyed by seed and step).
//!
//! Saving is collective ([`save`]): every rank contributes a list of `(name, full tensor)`
//! (a tp group reassembles its shards first with [`shard::full_tensor`], a ZeRO dp group its
//! moment shards with [`shard::gather_zero`]; a pipeline stage contributes its own layers),
//! rank 0 of the communicator given (the world, or the pp group of the stages' writers)
//! gathers them ([`gather_named`]), merges by name and writes atomically
//! (temporary file, then rename). Loading ([`Checkpoint::read`]): every rank reads the file
//! and cuts its shards by name exactly as [`Gpt::new_sharded`] does ([`shard::shard_tensor`]).
//! Errors name the file and the tensor.

mod file;
mod meta;
pub mod shard;

pub use file::write;
use file::{decode, encode};
pub use meta::Meta;

use crate::model::{Gpt, GptConfig};
use crate::tp::TpGroup;
use candle_core::{DType, Error, Result, Tensor, Var};
use oxccl::{Communicator, ReduceOp};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The version [`Meta::format_version`] has in files this code writes (and the only one it reads).
pub const FORMAT_VERSION: u64 = 1;
/// The `__metadata__` key holding the JSON [`Meta`].
pub const META_KEY: &str = "oxccl_train";
/// The tensor holding the step counter.
pub const STEP: &str = "step";

/// AdamW's first and second moments `(m, v)`: one flat vector per parameter (this rank's
/// shard of it), in the model's parameter order, as `AdamW` holds them.
pub type Moments = (Vec<Vec<f32>>, Vec<Vec<f32>>);

/// The file name of parameter `name`.
pub fn param_key(name: &str) -> String {
    format!("param.{name}")
}

/// The file name of AdamW's first moment of parameter `name`.
pub fn m_key(name: &str) -> String {
    format!("adam_m.{name}")
}

/// The file name of AdamW's second moment of parameter `name`.
pub fn v_key(name: &str) -> String {
    format!("adam_v.{name}")
}

/// Merges every world rank's `(name, full tensor)` list on rank 0, by name (a name given by
/// several ranks, e.g. by replicas, must have the same shape there; the lowest rank's copy is
/// kept). Collective over `world` (`None`: one rank); returns the merge on rank 0 and
/// `None` elsewhere. Each rank's list travels as one safetensors blob: its length by a
/// gather, its bytes by a send to rank 0.
pub fn gather_named(
    world: Option<&mut Communicator>,
    local: Vec<(String, Tensor)>,
) -> Result<Option<BTreeMap<String, Tensor>>> {
    let mut merged: BTreeMap<String, Tensor> = BTreeMap::new();
    let mut add = |from: usize, list: Vec<(String, Tensor)>| -> Result<()> {
        for (name, t) in list {
            match merged.get(&name) {
                Some(prev) if prev.dims() != t.dims() => candle_core::bail!(
                    "checkpoint tensor {name}: rank {from} gives shape {:?}, another rank {:?}",
                    t.dims(),
                    prev.dims()
                ),
                Some(_) => {}
                None => {
                    merged.insert(name, t);
                }
            }
        }
        Ok(())
    };
    let Some(comm) = world.filter(|c| c.size() > 1) else {
        add(0, local)?;
        return Ok(Some(merged));
    };
    let (rank, size) = (comm.rank(), comm.size() as usize);
    let blob = match rank {
        0 => Vec::new(),
        _ => encode(None, &local.iter().cloned().collect())?,
    };
    let mut lens = vec![0u64; if rank == 0 { size } else { 0 }];
    comm.gather(&[blob.len() as u64], &mut lens, 0)
        .map_err(Error::wrap)?;
    if rank != 0 {
        if !blob.is_empty() {
            comm.send(&blob, 0).map_err(Error::wrap)?;
        }
        return Ok(None);
    }
    add(0, local)?;
    for (r, &len) in lens.iter().enumerate().skip(1) {
        if len == 0 {
            continue;
        }
        let mut buf = vec![0u8; len as usize];
        comm.recv(&mut buf, r as u32).map_err(Error::wrap)?;
        let (_, tensors) = decode(&buf, &format!("rank {r}'s checkpoint tensors"))?;
        let mut list: Vec<_> = tensors.into_iter().collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        add(r, list)?;
    }
    Ok(Some(merged))
}

/// Saves a checkpoint to `path`: every rank of `world` contributes `local` (full tensors by
/// their file names, see the module doc; ranks holding nothing new pass an empty list),
/// rank 0 merges them ([`gather_named`]) and writes the file ([`write()`]). Collective; every
/// rank returns rank 0's outcome, so a failed write is an error everywhere.
pub fn save(
    path: &Path,
    mut world: Option<&mut Communicator>,
    meta: &Meta,
    local: Vec<(String, Tensor)>,
) -> Result<()> {
    let merged = gather_named(world.as_deref_mut(), local)?;
    let outcome = match merged {
        Some(tensors) => write(path, meta, &tensors),
        None => Ok(()),
    };
    let mut failed = [u32::from(outcome.is_err())];
    if let Some(c) = world.filter(|c| c.size() > 1) {
        c.all_reduce_in_place(&mut failed, ReduceOp::Sum)
            .map_err(Error::wrap)?;
    }
    match (outcome, failed[0]) {
        (Err(e), _) => Err(e),
        (Ok(()), 0) => Ok(()),
        (Ok(()), _) => {
            candle_core::bail!("checkpoint {}: rank 0 failed to write it", path.display())
        }
    }
}

/// A checkpoint read back: its metadata and full tensors.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    path: PathBuf,
    meta: Meta,
    tensors: HashMap<String, Tensor>,
}

impl Checkpoint {
    /// Reads the checkpoint at `path` (every rank may read it: it is small next to training).
    pub fn read(path: &Path) -> Result<Self> {
        let what = format!("checkpoint {}", path.display());
        let bytes = std::fs::read(path).map_err(|e| Error::msg(format!("{what}: {e}")))?;
        let (meta, tensors) = decode(&bytes, &what)?;
        let meta = meta.ok_or_else(|| Error::msg(format!("{what}: no {META_KEY} metadata")))?;
        let meta = Meta::from_json(&meta).map_err(|e| Error::msg(format!("{what}: {e}")))?;
        if meta.format_version != FORMAT_VERSION {
            candle_core::bail!(
                "{what}: format version {}, this build reads {FORMAT_VERSION}",
                meta.format_version
            );
        }
        let ckpt = Checkpoint {
            path: path.to_path_buf(),
            meta,
            tensors,
        };
        let step = ckpt
            .tensor(STEP, DType::U32)?
            .flatten_all()?
            .to_vec1::<u32>()?;
        if step != [meta.step as u32] {
            candle_core::bail!(
                "{what}: tensor {STEP} is {step:?}, metadata says {}",
                meta.step
            );
        }
        Ok(ckpt)
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata.
    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The tensors' names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut n: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        n.sort_unstable();
        n
    }

    /// Tensor `name`, which must exist and have `dtype`; the error names file and tensor.
    pub fn tensor(&self, name: &str, dtype: DType) -> Result<&Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::msg(format!(
                "checkpoint {}: no tensor {name}",
                self.path.display()
            ))
        })?;
        if t.dtype() != dtype {
            candle_core::bail!(
                "checkpoint {}: tensor {name} has dtype {:?}, expected {dtype:?}",
                self.path.display(),
                t.dtype()
            );
        }
        Ok(t)
    }

    /// An error unless the checkpoint's model is `model` (every field, padding included).
    pub fn check_model(&self, model: &GptConfig) -> Result<()> {
        if self.meta.model != *model {
            candle_core::bail!(
                "checkpoint {}: model {:?} does not match this run's {model:?}",
                self.path.display(),
                self.meta.model
            );
        }
        Ok(())
    }

    /// Loads every parameter of `model` (this tp rank's shards, cut by name as
    /// [`Gpt::new_sharded`] cuts them) after checking the model config. Not collective.
    pub fn load_params(&self, model: &Gpt) -> Result<()> {
        self.check_model(model.config())?;
        self.load_named(model.named_params(), model.tp_group())
    }

    /// Loads the parameters `named` (this tp rank's shards, of the checkpoint's model: a
    /// whole model or a pipeline stage's layers) by name. Not collective.
    pub fn load_named(&self, named: &[(String, Var)], group: Option<&TpGroup>) -> Result<()> {
        for (name, var) in named {
            var.set(&self.local(&param_key(name), name, var, group)?)?;
        }
        Ok(())
    }

    /// This tp rank's shards of AdamW's moments `(m, v)`, flat, in the model's parameter
    /// order (what `AdamW`'s state holds). Not collective.
    pub fn local_moments(&self, model: &Gpt) -> Result<Moments> {
        self.check_model(model.config())?;
        self.moments_named(model.named_params(), model.tp_group())
    }

    /// [`Checkpoint::local_moments`] for the parameters `named` (e.g. a pipeline stage's).
    pub fn moments_named(
        &self,
        named: &[(String, Var)],
        group: Option<&TpGroup>,
    ) -> Result<Moments> {
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (name, var) in named {
            let flat = |key: String| -> Result<Vec<f32>> {
                self.local(&key, name, var, group)?.flatten_all()?.to_vec1()
            };
            m.push(flat(m_key(name))?);
            v.push(flat(v_key(name))?);
        }
        Ok((m, v))
    }

    /// This rank's shard of tensor `key` (of parameter `name`, held here as `var`), whose
    /// full shape is checked first.
    fn local(&self, key: &str, name: &str, var: &Var, group: Option<&TpGroup>) -> Result<Tensor> {
        let full = self.tensor(key, DType::F32)?;
        let want = shard::full_shape(name, var.dims(), group.map_or(1, |g| g.size()));
        if full.dims() != want {
            candle_core::bail!(
                "checkpoint {}: tensor {key} has shape {:?}, expected {want:?}",
                self.path.display(),
                full.dims()
            );
        }
        shard::shard_tensor(name, full, self.meta.model.n_head, group)
    }
}
