//! GPT-2's byte-pair encoding (`r50k_base`, 50 257 tokens) through tiktoken-rs, whose
//! vocabulary file is compiled into that crate: nothing is downloaded at run time.

use std::fmt;
use std::sync::OnceLock;
use tiktoken_rs::CoreBPE;

/// Tokens of GPT-2's encoding: 50 256 byte-pair tokens and `<|endoftext|>` (id 50 256).
pub const GPT2_VOCAB_SIZE: usize = 50_257;

/// GPT-2's BPE tokenizer. Every text encodes (byte-level BPE has a token for every byte);
/// special tokens are not recognised in text: `"<|endoftext|>"` in the input is encoded as
/// ordinary characters, as in GPT-2's training data pipelines.
///
/// The encoding is parsed once per process and shared by every instance, so instances are
/// cheap to make and copy.
#[derive(Clone, Copy)]
pub struct Gpt2Tokenizer {
    bpe: &'static CoreBPE,
}

/// tiktoken-rs failed to build GPT-2's encoding from its embedded vocabulary (a broken
/// build of that crate; never seen in practice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt2LoadError {
    /// tiktoken-rs's message.
    pub reason: String,
}

impl fmt::Display for Gpt2LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot build GPT-2's BPE encoding (tiktoken-rs r50k_base): {}",
            self.reason
        )
    }
}

impl std::error::Error for Gpt2LoadError {}

impl Gpt2Tokenizer {
    /// GPT-2's tokenizer; the first call in a process parses the vocabulary (tens of ms).
    pub fn new() -> Result<Self, Gpt2LoadError> {
        static BPE: OnceLock<Result<CoreBPE, String>> = OnceLock::new();
        match BPE.get_or_init(|| tiktoken_rs::r50k_base().map_err(|e| format!("{e:#}"))) {
            Ok(bpe) => Ok(Gpt2Tokenizer { bpe }),
            Err(reason) => Err(Gpt2LoadError {
                reason: reason.clone(),
            }),
        }
    }

    /// Number of tokens: [`GPT2_VOCAB_SIZE`].
    pub fn vocab_size(&self) -> usize {
        GPT2_VOCAB_SIZE
    }

    /// Token ids of `text` (never fails; special tokens are encoded as plain text).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        self.bpe.encode_ordinary(text)
    }

    /// The text of `ids`. Ids outside the vocabulary (a caller bug, or a padding id the
    /// model sampled) become U+FFFD, as do byte sequences that are not UTF-8 (a sample may
    /// stop inside a multi-byte character).
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            if (id as usize) < GPT2_VOCAB_SIZE {
                // Cannot panic: ids 0..50256 are r50k_base's byte-pair tokens and 50256 its
                // one special token (tests/tokenizer.rs decodes every id).
                bytes.extend(self.bpe._decode_native_and_split(vec![id]).flatten());
            } else {
                bytes.extend_from_slice("\u{FFFD}".as_bytes());
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl fmt::Debug for Gpt2Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Gpt2Tokenizer(r50k_base, {GPT2_VOCAB_SIZE} tokens)")
    }
}

/// Every instance is the same encoding.
impl PartialEq for Gpt2Tokenizer {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Gpt2Tokenizer {}
