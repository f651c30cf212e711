//! The safetensors file: encoding, decoding and the atomic write.

use super::{Meta, META_KEY, STEP};
use candle_core::{DType, Device, Error, Result, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `tensors` as safetensors bytes (f32, and u32 for the step) with `meta` in the header.
pub(super) fn encode(meta: Option<&Meta>, tensors: &BTreeMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut raw = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.flatten_all()?;
        let (dtype, bytes): (Dtype, Vec<u8>) = match t.dtype() {
            DType::F32 => (Dtype::F32, le_bytes(t.to_vec1::<f32>()?, f32::to_le_bytes)),
            DType::U32 => (Dtype::U32, le_bytes(t.to_vec1::<u32>()?, u32::to_le_bytes)),
            d => candle_core::bail!("checkpoint tensor {name}: dtype {d:?} is not saved"),
        };
        raw.push((name.as_str(), dtype, tensors[name].dims().to_vec(), bytes));
    }
    let views = raw
        .iter()
        .map(|(n, d, s, b)| Ok((*n, safetensors::tensor::TensorView::new(*d, s.clone(), b)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(Error::wrap)?;
    let info = meta.map(|m| HashMap::from([(META_KEY.to_string(), m.to_json())]));
    safetensors::serialize(views, info).map_err(Error::wrap)
}

fn le_bytes<T: Copy, const N: usize>(xs: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
    xs.into_iter().flat_map(f).collect()
}

/// Tensors of safetensors `bytes` (f32; the step as u32, or u64 from other writers); `what`
/// names the source.
pub(super) fn decode(
    bytes: &[u8],
    what: &str,
) -> Result<(Option<String>, HashMap<String, Tensor>)> {
    let bad = |e: safetensors::SafeTensorError| Error::msg(format!("{what}: {e}"));
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let meta = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get(META_KEY).cloned());
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let data = view.data();
        let t = match view.dtype() {
            Dtype::F32 => {
                let xs = data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
                Tensor::from_vec(xs.collect::<Vec<_>>(), shape, &Device::Cpu)?
            }
            Dtype::U64 | Dtype::U32 => {
                let w = if view.dtype() == Dtype::U64 { 8 } else { 4 };
                let xs = data.chunks_exact(w).map(|c| {
                    let mut b = [0u8; 8];
                    b[..w].copy_from_slice(c);
                    u64::from_le_bytes(b) as u32
                });
                Tensor::from_vec(xs.collect::<Vec<_>>(), shape, &Device::Cpu)?
            }
            d => candle_core::bail!("{what}: tensor {name} has dtype {d:?}, expected F32"),
        };
        out.insert(name, t);
    }
    Ok((meta, out))
}

/// Writes `tensors` and `meta` to `path` atomically: a temporary file next to it, synced,
/// then renamed over `path`, so a crash leaves the old checkpoint or the new one, whole.
pub fn write(path: &Path, meta: &Meta, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let mut all = tensors.clone();
    // candle has no u64 tensors; u32 covers 4·10⁹ steps.
    let step = u32::try_from(meta.step).map_err(|_| Error::msg("step beyond u32"))?;
    all.insert(STEP.into(), Tensor::new(&[step], &Device::Cpu)?);
    let bytes = encode(Some(meta), &all)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(
        ".{}.tmp.{}",
        name.unwrap_or_else(|| "checkpoint".into()),
        std::process::id()
    ));
    let io =
        |e: std::io::Error, what: &Path| Error::msg(format!("checkpoint {}: {e}", what.display()));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| io(e, &tmp))?;
        f.write_all(&bytes).map_err(|e| io(e, &tmp))?;
        f.sync_all().map_err(|e| io(e, &tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e, path)
    })
}
