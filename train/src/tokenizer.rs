//! Character-level tokenizer: one token per distinct character of the training text.

use std::collections::BTreeSet;
use std::fmt;

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
