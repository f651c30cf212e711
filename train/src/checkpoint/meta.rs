//! The JSON metadata entry of a checkpoint.

use super::FORMAT_VERSION;
use crate::model::GptConfig;
use crate::tokenizer::{TokenizerInfo, TokenizerKind};
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
    /// The run's tokenizer: its kind and vocabulary size before padding (`model.vocab_size`
    /// minus the padding ids). Files written before tokenizers had kinds read as `char`.
    pub tokenizer: TokenizerInfo,
    /// Optimizer steps taken; training resumes at 0-based step `step`, which is also the
    /// data position.
    pub step: u64,
}

impl Meta {
    /// The metadata of a run of `model`, `seed` and `tokenizer` after `step` steps (a bare
    /// `usize` for `tokenizer` is a character tokenizer's vocabulary size).
    pub fn new(
        model: GptConfig,
        seed: u64,
        tokenizer: impl Into<TokenizerInfo>,
        step: u64,
    ) -> Self {
        Meta {
            format_version: FORMAT_VERSION,
            model,
            seed,
            tokenizer: tokenizer.into(),
            step,
        }
    }

    /// As a flat JSON object.
    pub fn to_json(&self) -> String {
        let m = &self.model;
        format!(
            "{{\"format_version\":{},\"seed\":{},\"step\":{},\"tokenizer\":\"{}\",\
             \"vocab_tokens\":{},\
             \"n_layer\":{},\"n_head\":{},\"n_embd\":{},\"block_size\":{},\
             \"vocab_size\":{},\"untied_head\":{}}}",
            self.format_version,
            self.seed,
            self.step,
            self.tokenizer.kind,
            self.tokenizer.vocab_size,
            m.n_layer,
            m.n_head,
            m.n_embd,
            m.block_size,
            m.vocab_size,
            m.untied_head
        )
    }

    /// Parses [`Meta::to_json`]'s output (a flat object of integers, booleans and the
    /// tokenizer's name), and that of earlier builds (`vocab_chars`, no `tokenizer`: a
    /// character tokenizer).
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
        let kind = match fields.get("tokenizer") {
            None => TokenizerKind::Char,
            Some(v) => v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .ok_or_else(|| format!("metadata \"tokenizer\" = {v} is not a string"))?
                .parse()
                .map_err(|e| format!("metadata \"tokenizer\": {e}"))?,
        };
        let vocab_size = match fields.contains_key("vocab_tokens") {
            true => us("vocab_tokens")?,
            false => us("vocab_chars")?,
        };
        Ok(Meta {
            format_version: num("format_version")?,
            seed: num("seed")?,
            step: num("step")?,
            tokenizer: TokenizerInfo { kind, vocab_size },
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
        let gpt2 = TokenizerInfo {
            kind: TokenizerKind::Gpt2,
            vocab_size: 50257,
        };
        let meta = Meta::new(GptConfig::tiny(50258), 7, gpt2, 3);
        assert!(meta.to_json().contains("\"tokenizer\":\"gpt2\""));
        assert_eq!(Meta::from_json(&meta.to_json()), Ok(meta));
    }

    #[test]
    fn metadata_of_earlier_builds_reads_as_a_character_tokenizer() {
        let old = "{\"format_version\":1,\"seed\":7,\"step\":3,\"vocab_chars\":65,\
                   \"n_layer\":2,\"n_head\":2,\"n_embd\":64,\"block_size\":64,\
                   \"vocab_size\":66,\"untied_head\":false}";
        let meta = Meta::from_json(old).unwrap();
        assert_eq!(meta.tokenizer, TokenizerInfo::from(65));
        let bad = old.replace("\"seed\"", "\"tokenizer\":\"bpe\",\"seed\"");
        let e = Meta::from_json(&bad).unwrap_err();
        assert!(e.contains("unknown tokenizer \"bpe\""), "{e}");
    }
}
