//! Tokenizers: character-level ([`CharTokenizer`], one token per distinct character of the
//! training text) and GPT-2's byte-pair encoding ([`Gpt2Tokenizer`], 50 257 tokens, through
//! tiktoken-rs). [`Tokenizer`] is either, chosen by a [`TokenizerKind`]; a checkpoint
//! records its [`TokenizerInfo`] so a run cannot resume with another tokenizer.

mod gpt2;

pub use gpt2::{Gpt2LoadError, Gpt2Tokenizer, GPT2_VOCAB_SIZE};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// Maps characters to token ids and back. The vocabulary is the text's distinct characters
/// in sorted order, so the same text always gives the same ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CharTokenizer {
    chars: Vec<char>,
}

/// A character that is not in the vocabulary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownChar {
    /// The character.
    pub ch: char,
    /// Its position (in characters) in the encoded text.
    pub at: usize,
}

impl fmt::Display for UnknownChar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "character {:?} (U+{:04X}) at position {} is not in the tokenizer's vocabulary",
            self.ch, self.ch as u32, self.at
        )
    }
}

impl std::error::Error for UnknownChar {}

impl CharTokenizer {
    /// The vocabulary of `text`: its distinct characters, sorted.
    pub fn from_text(text: &str) -> Self {
        let set: BTreeSet<char> = text.chars().collect();
        CharTokenizer {
            chars: set.into_iter().collect(),
        }
    }

    /// Number of tokens.
    pub fn vocab_size(&self) -> usize {
        self.chars.len()
    }

    /// Token ids of `text`, or the first character outside the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, UnknownChar> {
        text.chars()
            .enumerate()
            .map(|(at, ch)| {
                // The vocabulary is sorted, so a binary search finds the id.
                self.chars
                    .binary_search(&ch)
                    .map(|i| i as u32)
                    .map_err(|_| UnknownChar { ch, at })
            })
            .collect()
    }

    /// The text of `ids`; ids outside the vocabulary (a caller bug) become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        ids.iter()
            .map(|&i| {
                self.chars
                    .get(i as usize)
                    .copied()
                    .unwrap_or(char::REPLACEMENT_CHARACTER)
            })
            .collect()
    }
}

/// Which tokenizer a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TokenizerKind {
    /// [`CharTokenizer`]: the training text's distinct characters (the default).
    #[default]
    Char,
    /// [`Gpt2Tokenizer`]: GPT-2's byte-pair encoding.
    Gpt2,
}

impl TokenizerKind {
    /// Every kind, in the order of [`TokenizerKind::name`]'s documentation.
    pub const ALL: [TokenizerKind; 2] = [TokenizerKind::Char, TokenizerKind::Gpt2];

    /// `"char"` or `"gpt2"`: the name the command line and checkpoints use.
    pub fn name(self) -> &'static str {
        match self {
            TokenizerKind::Char => "char",
            TokenizerKind::Gpt2 => "gpt2",
        }
    }
}

impl fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TokenizerKind {
    type Err = String;

    /// Parses [`TokenizerKind::name`]; the error lists the names.
    fn from_str(s: &str) -> Result<Self, String> {
        TokenizerKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown tokenizer {s:?} (expected char or gpt2)"))
    }
}

/// What identifies a run's tokenizer in a checkpoint: its kind and vocabulary size (before
/// the model pads it). A bare `usize` converts to a character tokenizer of that size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenizerInfo {
    /// The tokenizer.
    pub kind: TokenizerKind,
    /// Its number of tokens.
    pub vocab_size: usize,
}

impl fmt::Display for TokenizerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the {} tokenizer ({} tokens)",
            self.kind, self.vocab_size
        )
    }
}

/// A character tokenizer of `vocab_size` characters (what checkpoint calls took before
/// tokenizers had kinds).
impl From<usize> for TokenizerInfo {
    fn from(vocab_size: usize) -> Self {
        TokenizerInfo {
            kind: TokenizerKind::Char,
            vocab_size,
        }
    }
}

impl From<&Tokenizer> for TokenizerInfo {
    fn from(t: &Tokenizer) -> Self {
        t.info()
    }
}

/// Why a [`Tokenizer`] or its dataset cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenizerError {
    /// The text holds a character the character tokenizer does not know.
    UnknownChar(UnknownChar),
    /// GPT-2's encoding failed to load.
    Gpt2(Gpt2LoadError),
}

impl fmt::Display for TokenizerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenizerError::UnknownChar(e) => e.fmt(f),
            TokenizerError::Gpt2(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for TokenizerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TokenizerError::UnknownChar(e) => Some(e),
            TokenizerError::Gpt2(e) => Some(e),
        }
    }
}

impl From<UnknownChar> for TokenizerError {
    fn from(e: UnknownChar) -> Self {
        TokenizerError::UnknownChar(e)
    }
}

impl From<Gpt2LoadError> for TokenizerError {
    fn from(e: Gpt2LoadError) -> Self {
        TokenizerError::Gpt2(e)
    }
}

/// A run's tokenizer: character-level or GPT-2 BPE, behind one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tokenizer {
    /// One token per distinct character of the training text.
    Char(CharTokenizer),
    /// GPT-2's byte-pair encoding.
    Gpt2(Gpt2Tokenizer),
}

impl Tokenizer {
    /// The tokenizer of kind `kind` for training on `text` (the character tokenizer's
    /// vocabulary is `text`'s characters; GPT-2's is fixed).
    pub fn for_text(kind: TokenizerKind, text: &str) -> Result<Self, TokenizerError> {
        Ok(match kind {
            TokenizerKind::Char => Tokenizer::Char(CharTokenizer::from_text(text)),
            TokenizerKind::Gpt2 => Tokenizer::Gpt2(Gpt2Tokenizer::new()?),
        })
    }

    /// Which tokenizer this is.
    pub fn kind(&self) -> TokenizerKind {
        match self {
            Tokenizer::Char(_) => TokenizerKind::Char,
            Tokenizer::Gpt2(_) => TokenizerKind::Gpt2,
        }
    }

    /// `"char"` or `"gpt2"` ([`TokenizerKind::name`]).
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Number of tokens (before the model pads it).
    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Char(t) => t.vocab_size(),
            Tokenizer::Gpt2(t) => t.vocab_size(),
        }
    }

    /// Kind and vocabulary size, as a checkpoint records them.
    pub fn info(&self) -> TokenizerInfo {
        TokenizerInfo {
            kind: self.kind(),
            vocab_size: self.vocab_size(),
        }
    }

    /// Token ids of `text`. Only the character tokenizer can fail (a character outside its
    /// vocabulary); GPT-2's encodes any text.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, UnknownChar> {
        match self {
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Gpt2(t) => Ok(t.encode(text)),
        }
    }

    /// The text of `ids`; ids outside the vocabulary (a caller bug, or a sampled padding id)
    /// become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        match self {
            Tokenizer::Char(t) => t.decode(ids),
            Tokenizer::Gpt2(t) => t.decode(ids),
        }
    }
}

impl From<CharTokenizer> for Tokenizer {
    fn from(t: CharTokenizer) -> Self {
        Tokenizer::Char(t)
    }
}

impl From<Gpt2Tokenizer> for Tokenizer {
    fn from(t: Gpt2Tokenizer) -> Self {
        Tokenizer::Gpt2(t)
    }
}
