//! Writes the values the binding tests compare against, computed with the Rust API of the runtime
//! (`emcoder::Model::predict`), so that C, C++, Go and Python are all checked against Rust.
//!
//! Usage: `cargo run --release -p emcoder-ffi --example expected_values -- <model_dir> <out>`
//!
//! The file is line-oriented text, fields separated by one space; floats are written in Rust's
//! shortest round-trip form, so `strtof` / `float()` read back the exact f32:
//! ```text
//! emcoder-expected 1
//! labels <num_labels>
//! label <name>                                   (num_labels lines, id order)
//! case <n_samples> <seed> <n_texts>             (n_samples 0: deterministic pass)
//! text <n_tokens> <utf-8 bytes of the text in lowercase hex>
//! stat <mean> <std> <total_entropy> <aleatoric> <epistemic> <predicted 0|1>   (num_labels lines)
//! logits <num_labels floats>                     (deterministic cases only)
//! end
//! ```

use emcoder_rt::{LoadOptions, Model, PredictOptions};
use std::fmt::Write as _;

/// The texts of every case: plain, negative, non-ASCII, tiny, and a longer one.
const TEXTS: [&str; 5] = [
    "I am so happy you are here!",
    "This is the worst day ever. I can't believe they did that to me.",
    "Merci beaucoup 🙏 ça me touche énormément, 谢谢",
    "ok",
    "Wow, I did not expect that at all... is it real? I'm a bit scared but also excited, \
     and honestly grateful that you told me first.",
];

/// (n_samples, seed): small sample counts keep the tests fast under valgrind.
const CASES: [(u32, u64); 3] = [(8, 42), (0, 42), (5, 1234)];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, out] = args.as_slice() else {
        return Err("usage: expected_values <model_dir> <out>".into());
    };
    let model = Model::load(dir.as_ref(), &LoadOptions::default())?;
    let mut s = String::from("emcoder-expected 1\n");
    writeln!(s, "labels {}", model.labels().len())?;
    for l in model.labels() {
        writeln!(s, "label {l}")?;
    }
    for (n_samples, seed) in CASES {
        let opts = PredictOptions {
            samples: n_samples.max(1),
            seed,
            deterministic: n_samples == 0,
            truncate: false,
            ..Default::default()
        };
        let preds = model.predict(&TEXTS, &opts)?;
        writeln!(s, "case {n_samples} {seed} {}", TEXTS.len())?;
        for (text, p) in TEXTS.iter().zip(&preds) {
            let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
            writeln!(s, "text {} {hex}", p.n_tokens)?;
            for l in &p.labels {
                writeln!(
                    s,
                    "stat {:e} {:e} {:e} {:e} {:e} {}",
                    l.mean,
                    l.std,
                    l.total_entropy,
                    l.aleatoric,
                    l.epistemic,
                    u8::from(l.predicted)
                )?;
            }
            if let Some(z) = &p.logits {
                let z: Vec<String> = z.iter().map(|v| format!("{v:e}")).collect();
                writeln!(s, "logits {}", z.join(" "))?;
            }
        }
    }
    s.push_str("end\n");
    std::fs::write(out, s)?;
    Ok(())
}
