//! Shared pieces of the fuzz targets: the C ABI compiled in (see below), fixture paths, a
//! small tokenizer and a per-process scratch folder.

use std::path::{Path, PathBuf};

/// The C ABI (`ffi/src`), compiled as a module of this crate: `emcoder-ffi` builds only a
/// cdylib and a staticlib (no rlib to depend on), and the targets call its `extern "C"`
/// functions exactly as a C caller would, with coverage instrumentation.
#[allow(dead_code, unused_imports)]
#[path = "../../ffi/src/lib.rs"]
pub mod ffi;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    repo().join("tests/fixtures").join(name)
}

/// A folder of this process for files a target writes (in /dev/shm when it exists, so that
/// writing model files costs no disk I/O).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let d = base.join(format!("emcoder-fuzz-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("creating the fuzz scratch folder");
    d
}

/// A WordLevel tokenizer of 64 ids (`[UNK]`, `[CLS]`, `[SEP]`, `[PAD]`, letters, digits and
/// some words) with a `[CLS] $A [SEP]` template: it parses in microseconds (the built-in
/// ModernBERT one takes ~100 ms) and fits the 512-id fixtures.
fn small_tokenizer_json() -> String {
    let mut vocab: Vec<String> = ["[UNK]", "[CLS]", "[SEP]", "[PAD]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend(('a'..='z').map(|c| c.to_string()));
    vocab.extend(('0'..='9').map(|c| c.to_string()));
    for w in [
        "i", "am", "so", "happy", "sad", "the", "you", "love", "hate", "this", "is", "not", "what",
        "why", "thanks", "sorry", "!", "?", ".", ",", "wow", "ok", "no", "yes",
    ] {
        if !vocab.iter().any(|v| v == w) {
            vocab.push(w.to_string());
        }
    }
    let entries: Vec<String> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{:?}:{i}", w))
        .collect();
    let added: Vec<String> = ["[UNK]", "[CLS]", "[SEP]", "[PAD]"]
        .iter()
        .enumerate()
        .map(|(i, t)| {
            format!(
                r#"{{"id":{i},"content":"{t}","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}}"#
            )
        })
        .collect();
    format!(
        r#"{{"version":"1.0","truncation":null,"padding":null,"added_tokens":[{}],"normalizer":{{"type":"Lowercase"}},"pre_tokenizer":{{"type":"Whitespace"}},"post_processor":{{"type":"TemplateProcessing","single":[{{"SpecialToken":{{"id":"[CLS]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}}],"pair":[{{"SpecialToken":{{"id":"[CLS]","type_id":0}}}},{{"Sequence":{{"id":"A","type_id":0}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":0}}}},{{"Sequence":{{"id":"B","type_id":1}}}},{{"SpecialToken":{{"id":"[SEP]","type_id":1}}}}],"special_tokens":{{"[CLS]":{{"id":"[CLS]","ids":[1],"tokens":["[CLS]"]}},"[SEP]":{{"id":"[SEP]","ids":[2],"tokens":["[SEP]"]}}}}}},"decoder":null,"model":{{"type":"WordLevel","vocab":{{{}}},"unk_token":"[UNK]"}}}}"#,
        added.join(","),
        entries.join(",")
    )
}

/// [`small_tokenizer_json`] written once per process; its path.
pub fn small_tokenizer_path() -> &'static Path {
    static P: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    P.get_or_init(|| {
        let p = scratch_dir("tokenizer").join("tokenizer.json");
        std::fs::write(&p, small_tokenizer_json()).expect("writing the small tokenizer");
        p
    })
}
