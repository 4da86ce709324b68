//! The kernels against their scalar references on fuzzed shapes and values (NaN, infinities,
//! subnormals and huge values in raw mode), at every instruction-set level this CPU runs,
//! on 1 and 3 threads: the checks of `kernels/tests/common/checks.rs` (shared with the
//! property tests), on shapes and bytes from the fuzzer.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[path = "../../kernels/tests/common/checks.rs"]
mod checks;
use checks::*;

#[derive(Arbitrary, Debug)]
enum Case {
    GemmF32 {
        m: u8,
        k: u8,
        n: u8,
        bias: bool,
    },
    GemmBf16 {
        m: u8,
        k: u8,
        n: u8,
        bias: bool,
    },
    Attention {
        t: u16,
        heads: u8,
        hd: u8,
        split: u8,
    },
    RmsNorm {
        rows: u8,
        d: u16,
        eps: u8,
    },
    Swiglu {
        n: u16,
    },
    Dropout {
        n: u16,
        p: u16,
        seed: u64,
        sample: u32,
        site: u32,
        pos: u32,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    case: Case,
    raw: bool,
    bytes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let Input { case, raw, bytes } = input;
    let bytes: &[u8] = if bytes.is_empty() { &[0] } else { &bytes };
    match case {
        Case::GemmF32 { m, k, n, bias } => {
            let (m, k, n) = (m as usize % 21, k as usize % 140, n as usize % 50);
            gemm_f32_check(m, k, n, bias, raw, bytes)
        }
        Case::GemmBf16 { m, k, n, bias } => {
            let (m, k, n) = (m as usize % 21, k as usize % 140, n as usize % 50);
            gemm_bf16_check(m, k, n, bias, raw, bytes)
        }
        Case::Attention {
            t,
            heads,
            hd,
            split,
        } => {
            let (t, nh, hd) = (
                1 + t as usize % 160,
                1 + heads as usize % 3,
                1 + hd as usize % 40,
            );
            let split = 1 + split as usize % t;
            attention_check(t, nh, hd, split, raw, bytes)
        }
        Case::RmsNorm { rows, d, eps } => {
            let eps = [1e-5f32, 1e-6, 0.0, f32::MIN_POSITIVE, 1.0][eps as usize % 5];
            norm_check(rows as usize % 5, d as usize % 300, eps, raw, bytes)
        }
        Case::Swiglu { n } => swiglu_check(n as usize % 600, raw, bytes),
        Case::Dropout {
            n,
            p,
            seed,
            sample,
            site,
            pos,
        } => {
            let p = (p % 1000) as f32 / 1000.0;
            dropout_check(n as usize % 600, p, seed, sample, site, pos, raw, bytes)
        }
    }
});
