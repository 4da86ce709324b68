//! Text -> token ids with the ModernBERT tokenizer (`tokenizers` crate): `[CLS] ... [SEP]`.

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The project's copy of the ModernBERT tokenizer (see `assets/SOURCE.md`), built in so a
/// model directory without `tokenizer.json` works like the published model card's setup.
pub static BUILTIN_TOKENIZER_JSON: &[u8] = include_bytes!("../../../assets/tokenizer.json");

/// Where the tokenizer came from (shown by `inspect`).
#[derive(Clone, Debug, PartialEq)]
pub enum TokenizerSource {
    /// A file (the model directory's `tokenizer.json` or a path the caller gave).
    File(PathBuf),
    /// The built-in ModernBERT tokenizer (the model directory has none).
    Builtin,
}

impl std::fmt::Display for TokenizerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerSource::File(p) => write!(f, "{}", p.display()),
            TokenizerSource::Builtin => write!(
                f,
                "built-in ModernBERT tokenizer (model directory has no tokenizer.json)"
            ),
        }
    }
}

/// A loaded tokenizer.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from.
    pub source: TokenizerSource,
    sep_id: Option<u32>,
    /// Bytes of the longest vocabulary entry (an upper bound on the text one token covers).
    max_token_bytes: usize,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_owned(),
                hint: "pass an existing tokenizer.json (or none, for the built-in ModernBERT tokenizer)".into(),
            },
            _ => Error::Io { path: path.to_owned(), source: e },
        })?;
        Self::from_bytes(&bytes, TokenizerSource::File(path.to_owned()))
    }

    /// The built-in ModernBERT tokenizer.
    pub fn builtin() -> Result<Self> {
        Self::from_bytes(BUILTIN_TOKENIZER_JSON, TokenizerSource::Builtin)
    }

    fn from_bytes(bytes: &[u8], source: TokenizerSource) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("cannot load {source}: {e}")))?;
        let sep_id = inner.token_to_id("[SEP]");
        let max_token_bytes = inner
            .get_vocab(true)
            .keys()
            .map(|k| k.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(TextTokenizer {
            inner,
            source,
            sep_id,
            max_token_bytes,
        })
    }

    /// Number of ids the tokenizer can produce (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes one text with its special tokens. Longer than `max_tokens`: an error, or with
    /// `truncate` the first `max_tokens - 1` tokens followed by `[SEP]`.
    ///
    /// The tokenizer only sees a bounded prefix of a long text: about `max_tokens + 64`
    /// tokens' worth of bytes (at the longest vocabulary entry's length), cut before a space
    /// that follows a word, so the prefix's tokens are the text's first tokens; the prefix
    /// doubles only when it yields too few tokens (runs of whitespace that a pre-tokenizer
    /// drops). A 100 MB text costs no more than a few kilobytes to truncate or to refuse.
    pub fn encode(&self, text: &str, max_tokens: usize, truncate: bool) -> Result<Vec<u32>> {
        let mut budget = max_tokens
            .saturating_add(64)
            .saturating_mul(self.max_token_bytes);
        let (mut ids, whole) = loop {
            let (part, whole) = match prefix(text, budget) {
                Some(p) => (p, false),
                None => (text, true),
            };
            let enc = self
                .inner
                .encode(part, true)
                .map_err(|e| Error::Input(format!("the tokenizer cannot encode this text: {e}")))?;
            // Within a prefix, trust only tokens well before its end.
            if whole || enc.get_ids().len() > max_tokens + 32 {
                break (enc.get_ids().to_vec(), whole);
            }
            budget = budget.saturating_mul(2);
        };
        if ids.len() > max_tokens {
            if !truncate {
                let count = if whole {
                    format!("{} tokens", ids.len())
                } else {
                    format!("more than {max_tokens} tokens")
                };
                return Err(Error::Input(format!(
                    "text has {count}, more than the limit of {max_tokens}; raise the limit (max_tokens) or ask for truncation"
                )));
            }
            let sep = self.sep_id.ok_or_else(|| {
                Error::Tokenizer("cannot truncate: the tokenizer has no [SEP] token".into())
            })?;
            if max_tokens < 2 {
                return Err(Error::Input(format!(
                    "max_tokens {max_tokens} is too small: [CLS] and [SEP] need 2"
                )));
            }
            ids.truncate(max_tokens - 1);
            ids.push(sep);
        }
        Ok(ids)
    }
}

/// The first bytes of `text`, about `budget` of them, cut right before an ASCII space that
/// follows a non-space (a word boundary that every whitespace-aware pre-tokenizer keeps),
/// else at a character boundary; `None` when the text is not longer than `budget`.
fn prefix(text: &str, budget: usize) -> Option<&str> {
    if text.len() <= budget {
        return None;
    }
    let b = text.as_bytes();
    let lo = budget / 2;
    let cut = (lo.max(1)..=budget)
        .rev()
        .find(|&i| b[i] == b' ' && !b[i - 1].is_ascii_whitespace())
        .unwrap_or_else(|| {
            (0..=budget)
                .rev()
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0)
        });
    Some(&text[..cut])
}
