//! The tokenizers: GPT-2's BPE (known ids, round trips, every id decodes, padding ids and
//! split characters decode to U+FFFD), the character tokenizer as before, a short training
//! run on GPT-2 tokens, and checkpoints that refuse another tokenizer.

mod common;
use common::one_thread_per_rank;

use oxccl_train::data::Dataset;
use oxccl_train::model::GptConfig;
use oxccl_train::optim::{AdamWConfig, LrSchedule};
use oxccl_train::tokenizer::{
    CharTokenizer, Gpt2Tokenizer, Tokenizer, TokenizerInfo, TokenizerKind, UnknownChar,
    GPT2_VOCAB_SIZE,
};
use oxccl_train::trainer::{TrainConfig, Trainer};
use oxccl_train::TINY_SHAKESPEARE;
use std::sync::Arc;

/// The first lines of Tiny Shakespeare (about 2 000 characters).
fn excerpt() -> &'static str {
    let end = TINY_SHAKESPEARE
        .char_indices()
        .nth(2000)
        .map_or(TINY_SHAKESPEARE.len(), |(i, _)| i);
    &TINY_SHAKESPEARE[..end]
}

fn gpt2() -> Tokenizer {
    Tokenizer::for_text(TokenizerKind::Gpt2, "").expect("GPT-2's encoding loads")
}

#[test]
fn gpt2_gives_gpt2s_ids() {
    let tok = gpt2();
    assert_eq!(tok.name(), "gpt2");
    assert_eq!(tok.encode("Hello world"), Ok(vec![15496, 995]));
    assert_eq!(tok.encode(" Hello"), Ok(vec![18435]));
    assert_eq!(tok.encode("\n"), Ok(vec![198]));
    assert_eq!(tok.encode(""), Ok(vec![]));
    // Special tokens are plain text in ordinary text: never the <|endoftext|> id.
    let eot = tok.encode("<|endoftext|>").unwrap();
    assert!(eot.len() > 1 && !eot.contains(&50256), "{eot:?}");
    assert_eq!(tok.decode(&eot), "<|endoftext|>");
}

#[test]
fn gpt2_round_trips_text() {
    let tok = gpt2();
    for text in [
        excerpt(),
        "  leading spaces,\ttabs\r\nand 12345 digits'll stay",
        "naïve café — 日本語 🎭 ‰",
    ] {
        let ids = tok.encode(text).unwrap();
        assert!(ids.iter().all(|&i| (i as usize) < GPT2_VOCAB_SIZE));
        assert_eq!(tok.decode(&ids), text);
    }
    // BPE merges: well under one token per character on English text.
    let ids = tok.encode(excerpt()).unwrap();
    assert!(
        ids.len() * 3 < excerpt().chars().count(),
        "{} tokens",
        ids.len()
    );
}

#[test]
fn gpt2_has_50257_tokens_and_every_id_decodes() {
    let tok = gpt2();
    assert_eq!(tok.vocab_size(), 50257);
    assert_eq!(
        tok.info(),
        TokenizerInfo {
            kind: TokenizerKind::Gpt2,
            vocab_size: 50257
        }
    );
    for id in 0..GPT2_VOCAB_SIZE as u32 {
        let _ = tok.decode(&[id]);
    }
    assert_eq!(tok.decode(&[50256]), "<|endoftext|>");
    // Padding ids (the model's vocabulary is padded past 50 257) and nonsense: U+FFFD.
    assert_eq!(
        tok.decode(&[15496, 50257, u32::MAX, 995]),
        "Hello\u{FFFD}\u{FFFD} world"
    );
    // A sample may stop inside a multi-byte character: lossy, no panic.
    let mask = tok.encode("🎭").unwrap();
    assert!(mask.len() > 1, "{mask:?}");
    assert!(tok.decode(&mask[..1]).contains('\u{FFFD}'));
}

#[test]
fn char_tokenizer_is_unchanged() {
    let char_tok = CharTokenizer::from_text(TINY_SHAKESPEARE);
    assert_eq!(char_tok.vocab_size(), 65);
    assert_eq!(char_tok.encode("ab"), Ok(vec![39, 40]));
    assert_eq!(char_tok.decode(&[39, 40, 65]), "ab\u{FFFD}");
    assert_eq!(char_tok.encode("a€"), Err(UnknownChar { ch: '€', at: 1 }));

    let tok = Tokenizer::for_text(TokenizerKind::Char, TINY_SHAKESPEARE).unwrap();
    assert_eq!(tok, Tokenizer::Char(char_tok.clone()));
    assert_eq!((tok.name(), tok.info()), ("char", TokenizerInfo::from(65)));
    assert_eq!(tok.encode("a€"), Err(UnknownChar { ch: '€', at: 1 }));
    assert_eq!(tok.decode(&[39, 40, 65]), "ab\u{FFFD}");

    let (old_tok, old) = Dataset::from_text(excerpt()).unwrap();
    let (new_tok, new) = Dataset::from_text_with(excerpt(), TokenizerKind::Char).unwrap();
    assert_eq!(new_tok, Tokenizer::Char(old_tok));
    for split in [
        oxccl_train::data::Split::Train,
        oxccl_train::data::Split::Val,
    ] {
        assert_eq!(new.tokens(split), old.tokens(split));
    }
}

#[test]
fn tokenizer_kinds_parse_and_print() {
    assert_eq!(TokenizerKind::default(), TokenizerKind::Char);
    for kind in TokenizerKind::ALL {
        assert_eq!(kind.name().parse(), Ok(kind));
        assert_eq!(kind.to_string(), kind.name());
    }
    let e = "bpe".parse::<TokenizerKind>().unwrap_err();
    assert!(
        e.contains("unknown tokenizer \"bpe\"") && e.contains("gpt2"),
        "{e}"
    );
    let info = gpt2().info();
    assert_eq!(info.to_string(), "the gpt2 tokenizer (50257 tokens)");
}

#[test]
fn tiny_shakespeare_in_gpt2_tokens() {
    let (tok, data) = Dataset::from_text_with(TINY_SHAKESPEARE, TokenizerKind::Gpt2).unwrap();
    assert_eq!(tok, Tokenizer::Gpt2(Gpt2Tokenizer::new().unwrap()));
    let (train, val) = (
        data.tokens(oxccl_train::data::Split::Train),
        data.tokens(oxccl_train::data::Split::Val),
    );
    // nanoGPT's shakespeare/prepare.py counts 301 966 + 36 059 = 338 025 tokens (it cuts
    // the characters 90/10 and encodes the halves apart; the cut falls between pieces).
    assert_eq!(train.len() + val.len(), 338_025);
    assert_eq!(train.len(), 338_025 * 9 / 10);
}

fn config(vocab: usize, steps: u64) -> TrainConfig {
    let mut model = GptConfig::tiny(vocab);
    model.block_size = 16;
    TrainConfig {
        model,
        batch: 4,
        block: 16,
        steps,
        seed: 1337,
        lr: LrSchedule {
            max_lr: 1e-2,
            min_lr: 1e-3,
            warmup: 1,
            total: steps,
        },
        adamw: AdamWConfig::default(),
        eval_every: 0,
        eval_batches: 0,
        bucket_bytes: 1 << 20,
        zero: None,
        dropout: 0.0,
    }
}

#[test]
fn training_on_gpt2_tokens_lowers_the_loss_from_ln_vocab() {
    one_thread_per_rank();
    let (tok, data) = Dataset::from_text_with(excerpt(), TokenizerKind::Gpt2).unwrap();
    let mut t = Trainer::new(config(tok.vocab_size(), 6), Arc::new(data), None).unwrap();
    let mut losses = Vec::new();
    t.train(|l| losses.push(l.loss)).unwrap();
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    let uniform = (GPT2_VOCAB_SIZE as f32).ln();
    assert!(
        (losses[0] - uniform).abs() < 0.5,
        "{losses:?} vs ln 50257 = {uniform}"
    );
    assert!(losses[5] < losses[0] - 1.0, "{losses:?}");
}

#[test]
fn a_checkpoint_resumes_only_with_its_tokenizer() {
    one_thread_per_rank();
    let path = std::env::temp_dir().join(format!("oxccl-tokenizer-{}.st", std::process::id()));
    let (tok, data) = Dataset::from_text(excerpt()).unwrap();
    let (tok, data) = (Tokenizer::Char(tok), Arc::new(data));
    let mut t = Trainer::new(config(tok.vocab_size(), 2), data.clone(), None).unwrap();
    t.step(0).unwrap();
    t.save_checkpoint(&path, &tok, 1).unwrap();

    let mut fresh = Trainer::new(config(tok.vocab_size(), 2), data, None).unwrap();
    let e = fresh
        .resume_with_tokenizer(&path, &gpt2())
        .unwrap_err()
        .to_string();
    let saved = format!("the char tokenizer ({} tokens)", tok.vocab_size());
    assert!(
        e.contains(&saved) && e.contains("the gpt2 tokenizer (50257 tokens)"),
        "{e}"
    );
    // Same kind, other vocabulary: refused too.
    let e = fresh
        .resume_with_tokenizer(&path, 66)
        .unwrap_err()
        .to_string();
    assert!(e.contains("char tokenizer (66 tokens)"), "{e}");
    assert_eq!(fresh.resume_with_tokenizer(&path, &tok).unwrap(), 1);
    let _ = std::fs::remove_file(path);
}
