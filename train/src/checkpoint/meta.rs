//! The JSON metadata entry of a checkpoint.

use super::FORMAT_VERSION;
use crate::model::GptConfig;
use std::collections::HashMap;

/// What a checkpoint records besides tensors (stored as JSON under [`META_KEY`](super::META_KEY)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u64,
    /// The model's shape (`vocab_size` padded as trained).
    pub model: GptConfig,
    /// The run's seed (initial weights and batches).
    pub seed: u64,
    /// The tokenizer's vocabulary before padding (`model.vocab_size` minus the padding ids).
    pub vocab_chars: usize,
    /// Optimizer steps taken; training resumes at 0-based step `step`, which is also the
    /// data position.
    pub step: u64,
}

impl Meta {
    /// The metadata of a run of `model` and `seed` after `step` steps.
    pub fn new(model: GptConfig, seed: u64, vocab_chars: usize, step: u64) -> Self {
        Meta {
            format_version: FORMAT_VERSION,
            model,
            seed,
            vocab_chars,
            step,
        }
    }

    /// As a flat JSON object.
    pub fn to_json(&self) -> String {
        let m = &self.model;
        format!(
            "{{\"format_version\":{},\"seed\":{},\"step\":{},\"vocab_chars\":{},\
             \"n_layer\":{},\"n_head\":{},\"n_embd\":{},\"block_size\":{},\
             \"vocab_size\":{},\"untied_head\":{}}}",
            self.format_version,
            self.seed,
            self.step,
            self.vocab_chars,
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.block_size,
            m.vocab_size,
            m.untied_head
        )
    }

    /// Parses [`Meta::to_json`]'s output (a flat object of integers and booleans).
    pub fn from_json(s: &str) -> std::result::Result<Self, String> {
        let body = s.trim().strip_prefix('{').and_then(|b| b.strip_suffix('}'));
        let body = body.ok_or_else(|| format!("metadata is not a JSON object: {s}"))?;
        let mut fields = HashMap::new();
        for item in body.split(',').filter(|i| !i.trim().is_empty()) {
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("bad metadata entry {item:?}"))?;
            fields.insert(k.trim().trim_matches('"').to_string(), v.trim().to_string());
        }
        let get = |k: &str| -> std::result::Result<&str, String> {
            fields
                .get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("metadata has no {k:?}"))
        };
        let num = |k: &str| -> std::result::Result<u64, String> {
            let v = get(k)?;
            v.parse()
                .map_err(|_| format!("metadata {k:?} = {v} is not an integer"))
        };
        let us = |k: &str| num(k).map(|n| n as usize);
        let untied_head = match get("untied_head")? {
            "true" => true,
            "false" => false,
            v => return Err(format!("metadata \"untied_head\" = {v} is not a boolean")),
        };
        Ok(Meta {
            format_version: num("format_version")?,
            seed: num("seed")?,
            step: num("step")?,
            vocab_chars: us("vocab_chars")?,
            model: GptConfig {
                n_layer: us("n_layer")?,
                n_head: us("n_head")?,
                n_embd: us("n_embd")?,
                block_size: us("block_size")?,
                vocab_size: us("vocab_size")?,
                untied_head,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_through_json() {
        let meta = Meta::new(GptConfig::small(66), u64::MAX - 3, 65, 1234);
        assert_eq!(Meta::from_json(&meta.to_json()), Ok(meta));
        let e = Meta::from_json("{\"seed\":1}").unwrap_err();
        assert!(e.starts_with("metadata has no"), "{e}");
    }
}
