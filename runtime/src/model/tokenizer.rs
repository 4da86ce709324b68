//! Text -> token ids with the ModernBERT tokenizer (`tokenizers` crate): `[CLS] ... [SEP]`.

use crate::error::{Error, Result};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

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

/// A loaded tokenizer. Models loaded from the same `tokenizer.json` bytes share one parse
/// (see [`TextTokenizer::from_file`]).
pub struct TextTokenizer {
    parsed: Arc<Parsed>,
    /// Where it came from.
    pub source: TokenizerSource,
}

/// One parse of a `tokenizer.json`, shared by every tokenizer loaded from the same bytes.
struct Parsed {
    inner: tokenizers::Tokenizer,
    sep_id: Option<u32>,
    /// Bytes of the longest vocabulary entry (an upper bound on the text one token covers).
    max_token_bytes: usize,
    /// The JSON it was parsed from: the cache's key, compared in full (never by a hash).
    json: Cow<'static, [u8]>,
}

/// The parses that some loaded tokenizer still uses. A long-running service that loads models
/// again and again (or many at once) parses each distinct tokenizer once: ModernBERT's 3.5 MB
/// JSON takes about 0.1 s and 60-70 MB of transient memory per parse. An entry lives as long
/// as a tokenizer uses it; dead entries are dropped at the next load.
static PARSED: Mutex<Vec<Weak<Parsed>>> = Mutex::new(Vec::new());

impl TextTokenizer {
    /// Loads a `tokenizer.json` file. Loads of the same bytes (any path) share one parse in
    /// this process while a tokenizer from it is alive; concurrent loads wait for one parse
    /// rather than each holding its own transient memory.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::MissingFile {
                path: path.to_owned(),
                hint: "pass an existing tokenizer.json (or none, for the built-in ModernBERT tokenizer)".into(),
            },
            _ => Error::Io { path: path.to_owned(), source: e },
        })?;
        Self::from_json(Cow::Owned(bytes), TokenizerSource::File(path.to_owned()))
    }

    /// The built-in ModernBERT tokenizer.
    pub fn builtin() -> Result<Self> {
        Self::from_json(
            Cow::Borrowed(BUILTIN_TOKENIZER_JSON),
            TokenizerSource::Builtin,
        )
    }

    fn from_json(json: Cow<'static, [u8]>, source: TokenizerSource) -> Result<Self> {
        // Held while parsing, so that loads of the same bytes at the same time share it
        // (loads of other bytes wait for it too: loads are rare, a parse takes ~0.1 s; a
        // poisoned lock still holds a consistent list: entries are pushed after a parse).
        let mut cache = PARSED.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|w| w.strong_count() > 0);
        let found = cache
            .iter()
            .filter_map(Weak::upgrade)
            .find(|p| *p.json == *json);
        let parsed = match found {
            Some(p) => p,
            None => {
                let p = Arc::new(Parsed::parse(json, &source)?);
                cache.push(Arc::downgrade(&p));
                p
            }
        };
        Ok(TextTokenizer { parsed, source })
    }

    /// Whether two tokenizers share one parse (same bytes, loaded while the other was alive).
    pub fn shares_parse_with(&self, other: &TextTokenizer) -> bool {
        Arc::ptr_eq(&self.parsed, &other.parsed)
    }

    /// Number of ids the tokenizer can produce (with added tokens).
    pub fn vocab_size(&self) -> usize {
        self.parsed.inner.get_vocab_size(true)
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
            .saturating_mul(self.parsed.max_token_bytes);
        let (mut ids, whole) = loop {
            let (part, whole) = match prefix(text, budget) {
                Some(p) => (p, false),
                None => (text, true),
            };
            let enc =
                self.parsed.inner.encode(part, true).map_err(|e| {
                    Error::Input(format!("the tokenizer cannot encode this text: {e}"))
                })?;
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
            let sep = self.parsed.sep_id.ok_or_else(|| {
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

impl Parsed {
    fn parse(json: Cow<'static, [u8]>, source: &TokenizerSource) -> Result<Parsed> {
        let inner = tokenizers::Tokenizer::from_bytes(&*json)
            .map_err(|e| Error::Tokenizer(format!("cannot load {source}: {e}")))?;
        let sep_id = inner.token_to_id("[SEP]");
        let max_token_bytes = inner
            .get_vocab(true)
            .keys()
            .map(|k| k.len())
            .max()
            .unwrap_or(1)
            .max(1);
        Ok(Parsed {
            inner,
            sep_id,
            max_token_bytes,
            json,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_of_the_same_bytes_share_one_parse() {
        let dir =
            std::env::temp_dir().join(format!("emcoder-tokenizer-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = |name: &str, json: &[u8]| {
            let p = dir.join(name);
            std::fs::write(&p, json).unwrap();
            p
        };
        let text = "I am so happy you are here! Thanks a lot.";
        let a = TextTokenizer::builtin().unwrap();
        let b = TextTokenizer::builtin().unwrap();
        assert!(a.shares_parse_with(&b));
        // The same bytes in a file: the same parse, each tokenizer with its own source.
        let same = file("same.json", BUILTIN_TOKENIZER_JSON);
        let f = TextTokenizer::from_file(&same).unwrap();
        assert!(f.shares_parse_with(&a));
        assert_eq!(f.source, TokenizerSource::File(same.clone()));
        assert_eq!(a.source, TokenizerSource::Builtin);
        // Other bytes (a trailing space): a parse of their own, the same encodings.
        let mut spaced = BUILTIN_TOKENIZER_JSON.to_vec();
        spaced.push(b' ');
        let other = file("other.json", &spaced);
        let o = TextTokenizer::from_file(&other).unwrap();
        assert!(!o.shares_parse_with(&a));
        assert_eq!(
            o.encode(text, 512, false).unwrap(),
            a.encode(text, 512, false).unwrap()
        );
        // Loads at the same time of bytes nobody parsed yet: one parse for all.
        spaced.push(b'\n');
        let third = file("third.json", &spaced);
        let loaded: Vec<TextTokenizer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| s.spawn(|| TextTokenizer::from_file(&third).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(loaded.iter().all(|t| t.shares_parse_with(&loaded[0])));
        assert!(!loaded[0].shares_parse_with(&o) && !loaded[0].shares_parse_with(&a));
        // Unused parses are not kept: the cache holds no strong reference.
        let weak = Arc::downgrade(&o.parsed);
        drop(o);
        assert!(weak.upgrade().is_none());
        // A file that does not parse is an error every time (errors are not cached).
        let bad = file("bad.json", b"{ not json");
        for _ in 0..2 {
            let e = TextTokenizer::from_file(&bad).err().unwrap().to_string();
            assert!(e.contains("bad.json"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
