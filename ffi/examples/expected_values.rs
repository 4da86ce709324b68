//! Writes the values the binding tests compare against, computed with the Rust API of the runtime
//! (`emcoder::Model::predict`), so that C, C++, Go and Python are all checked against Rust.
//!
//! Usage: `cargo run --release -p emcoder-ffi --example expected_values -- <model_dir> <out>`
//!
//! The file is line-oriented text, fields separated by one space; floats are written in Rust's
//! shortest round-trip form, so `strtof` / `strtod` / `float()` read back the exact value:
//! ```text
//! emcoder-expected 2
//! labels <num_labels>
//! label <name>                                   (num_labels lines, id order)
//! case <n_samples> <seed> <n_texts> <decision_error>
//!                                                (n_samples 0: deterministic pass;
//!                                                 decision_error 0: off, else the
//!                                                 options' decision_error)
//! text <n_tokens> <samples> <utf-8 bytes of the text in lowercase hex>
//!                                                (samples: the samples this text drew)
//! stat <mean> <std> <total_entropy> <aleatoric> <epistemic> <predicted 0|1>   (num_labels lines)
//! logits <num_labels floats>                     (deterministic cases only)
//! end
//! ```

use emcoder_rt::{LoadOptions, Model, PredictOptions};
use std::fmt::Write as _;

/// The texts of the fixed-N cases: plain, negative, non-ASCII, tiny, and a longer one.
const TEXTS: [&str; 5] = [
    "I am so happy you are here!",
    "This is the worst day ever. I can't believe they did that to me.",
    "Merci beaucoup 🙏 ça me touche énormément, 谢谢",
    "ok",
    "Wow, I did not expect that at all... is it real? I'm a bit scared but also excited, \
     and honestly grateful that you told me first.",
];

/// The texts of the case that stops on decisions: with the fixture model (seed 42, N <= 50,
/// decision_error 0.01) the first two settle early (after 10 and 20 samples when this was
/// written) and the last two never do and draw all 50, so a binding that dropped the option
/// would report 50 samples and other numbers for the first two.
const DECIDE_TEXTS: [&str; 4] = [
    "I’m so sorry 🤪",
    "I only eat cronuts cuz I'm sophisticated!",
    "I am so happy you are here!",
    "ok",
];

/// A case: (n_samples, seed, decision_error, texts). Small sample counts keep the tests fast
/// under valgrind.
type Case = (u32, u64, Option<f32>, &'static [&'static str]);
const CASES: [Case; 4] = [
    (8, 42, None, &TEXTS),
    (0, 42, None, &TEXTS),
    (5, 1234, None, &TEXTS),
    (50, 42, Some(0.01), &DECIDE_TEXTS),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, out] = args.as_slice() else {
        return Err("usage: expected_values <model_dir> <out>".into());
    };
    let model = Model::load(dir.as_ref(), &LoadOptions::default())?;
    let mut s = String::from("emcoder-expected 2\n");
    writeln!(s, "labels {}", model.labels().len())?;
    for l in model.labels() {
        writeln!(s, "label {l}")?;
    }
    for (n_samples, seed, decision_error, texts) in CASES {
        let opts = PredictOptions {
            samples: n_samples.max(1),
            seed,
            deterministic: n_samples == 0,
            truncate: false,
            decision_error,
            ..Default::default()
        };
        let preds = model.predict(texts, &opts)?;
        if decision_error.is_some() && preds.iter().all(|p| p.samples == n_samples) {
            // Then the bindings' tests could not tell whether the option reached the library.
            return Err(format!(
                "no text of the decision_error case stopped before {n_samples} samples: \
                 choose other DECIDE_TEXTS in {}",
                file!()
            )
            .into());
        }
        writeln!(
            s,
            "case {n_samples} {seed} {} {}",
            texts.len(),
            decision_error.unwrap_or(0.0)
        )?;
        for (text, p) in texts.iter().zip(&preds) {
            let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
            let drawn = if n_samples == 0 { 0 } else { p.samples };
            writeln!(s, "text {} {drawn} {hex}", p.n_tokens)?;
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
