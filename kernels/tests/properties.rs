//! Property tests: every kernel against its scalar reference on random shapes (including
//! ones the model never uses: k = 0, one channel, odd widths, head sizes that are no multiple
//! of a vector) and random values, raw f32 bits among them, at every level this CPU runs.
//! The checks are shared with the fuzz target `kernels` (see `common/checks.rs`).

mod common;

use common::checks::*;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    // Each case runs every level on 1 and 3 threads; 48 cases per property keep the file
    // at a few seconds. PROPTEST_CASES raises it.
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(48),
        ..ProptestConfig::default()
    }
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..64)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn linear_f32_any_shape(m in 0usize..24, k in 0usize..160, n in 0usize..70, bias: bool, raw: bool, b in bytes()) {
        gemm_f32_check(m, k, n, bias, raw, &b);
    }

    #[test]
    fn linear_bf16_any_shape(m in 0usize..24, k in 0usize..160, n in 0usize..70, bias: bool, raw: bool, b in bytes()) {
        gemm_bf16_check(m, k, n, bias, raw, &b);
    }

    #[test]
    fn attention_any_shape(t in 1usize..150, nh in 1usize..4, hd in 1usize..48, split in 1usize..150, raw: bool, b in bytes()) {
        attention_check(t, nh, hd, 1 + (split - 1) % t, raw, &b);
    }

    #[test]
    fn rmsnorm_any_shape(rows in 0usize..5, d in 0usize..300, eps in prop::sample::select(vec![1e-5f32, 1e-6, 0.0, f32::MIN_POSITIVE, 1.0]), raw: bool, b in bytes()) {
        norm_check(rows, d, eps, raw, &b);
    }

    #[test]
    fn swiglu_any_length(n in 0usize..700, raw: bool, b in bytes()) {
        swiglu_check(n, raw, &b);
    }

    #[test]
    fn dropout_any_row(n in 0usize..700, p in 0.0f32..0.999, seed: u64, sample: u32, site: u32, pos: u32, raw: bool, b in bytes()) {
        dropout_check(n, p, seed, sample, site, pos, raw, &b);
    }
}
