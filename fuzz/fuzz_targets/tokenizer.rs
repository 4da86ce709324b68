//! The tokenizer wrapper and truncation on fuzzed UTF-8, with the built-in ModernBERT
//! tokenizer.
//!
//! `TextTokenizer::encode` tokenizes only a bounded prefix of a long text; the oracle is the
//! whole text's encoding: with `truncate`, the result must be its first `max_tokens - 1` ids
//! followed by `[SEP]` (or all of it when it fits), and without, an error exactly when it does
//! not fit.
#![no_main]

use arbitrary::Arbitrary;
use emcoder_rt::model::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

#[derive(Arbitrary, Debug)]
struct Input {
    max_tokens: u8,
    /// Repeats the text this many times (long texts from short inputs).
    repeat: u8,
    text: String,
}

fn tok() -> &'static TextTokenizer {
    static T: OnceLock<TextTokenizer> = OnceLock::new();
    T.get_or_init(|| TextTokenizer::builtin().expect("the built-in tokenizer loads"))
}

fuzz_target!(|input: Input| {
    let t = tok();
    let max_tokens = input.max_tokens as usize % 80;
    let text = input.text.repeat(1 + input.repeat as usize % 16);
    // The oracle: the whole text, no prefix (a limit no text here reaches).
    let whole = t
        .encode(&text, usize::MAX / 4, false)
        .expect("every UTF-8 text encodes");
    assert!(whole.len() >= 2, "[CLS] and [SEP] are always there");
    let sep = *whole.last().unwrap();
    match t.encode(&text, max_tokens, true) {
        Ok(ids) => {
            if whole.len() <= max_tokens {
                assert_eq!(ids, whole, "a text that fits must not change");
            } else {
                assert_eq!(ids.len(), max_tokens, "truncated to the limit");
                assert_eq!(
                    ids[..max_tokens - 1],
                    whole[..max_tokens - 1],
                    "the prefix's ids differ from the whole text's"
                );
                assert_eq!(ids[max_tokens - 1], sep);
            }
        }
        Err(e) => assert!(
            max_tokens < 2 && whole.len() > max_tokens,
            "truncate failed on a valid limit: {e}"
        ),
    }
    match t.encode(&text, max_tokens, false) {
        Ok(ids) => assert_eq!(ids, whole),
        Err(e) => {
            assert!(whole.len() > max_tokens, "refused a text that fits: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains("max_tokens") || msg.contains("limit"),
                "unclear error: {msg}"
            );
        }
    }
});
