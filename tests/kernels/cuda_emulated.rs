//! The CUDA kernels (kernels/cuda/emcoder.cu) on the CPU through the emulation in
//! kernels/cuda/emulate/ (the same source, compiled as C++ with the host's compiler), checked
//! by tests/kernels/cuda_checks.rs against the CPU engine, so that every kernel is checked on
//! every CI machine, GPU or not (scripts/gpu-check.sh runs the same checks on a GPU).
//! When they skip: tests/kernels/emu_harness.rs.

#[path = "cuda_checks.rs"]
mod cuda_checks;
#[path = "emu_harness.rs"]
mod emu_harness;

use cuda_checks::{Launch, A};
use emu_harness::HArg;

/// Runs `kernel` over grid x block on the emulation; the buffers in `args` are replaced by
/// their contents afterwards. False when the tests are skipped (emulation off, no compiler).
fn launch(head_dim: usize, kernel: &str, grid: [u32; 3], block: [u32; 3], args: &mut [A]) -> bool {
    let hargs: Vec<HArg> = args
        .iter()
        .map(|a| match a {
            A::F(v) => HArg::B32(v.iter().map(|x| x.to_bits()).collect()),
            A::U(v) => HArg::B32(v.clone()),
            A::I(v) => HArg::B32(v.iter().map(|x| *x as u32).collect()),
            A::H(v) => HArg::B16(v.clone()),
            A::Null => HArg::Null,
            A::Int(x) => HArg::Scalar(*x as u32 as u64),
            A::Uns(x) => HArg::Scalar(*x as u64),
            A::Flt(x) => HArg::Scalar(x.to_bits() as u64),
            A::Long(x) => HArg::Scalar(*x as u64),
        })
        .collect();
    let Some(out) = emu_harness::run(head_dim, kernel, grid, block, &hargs) else {
        return false;
    };
    for (a, w) in args.iter_mut().zip(out) {
        let Some(w) = w else { continue };
        match a {
            A::F(v) => *v = w.iter().map(|x| f32::from_bits(*x)).collect(),
            A::U(v) => *v = w,
            A::I(v) => *v = w.iter().map(|x| *x as i32).collect(),
            A::H(v) => *v = w.iter().map(|x| *x as u16).collect(),
            _ => unreachable!(),
        }
    }
    true
}

/// The emulation as a [`Launch`].
struct Emulated;

impl Launch for Emulated {
    fn launch(
        &self,
        head_dim: usize,
        kernel: &str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &mut [A],
    ) -> bool {
        launch(head_dim, kernel, grid, block, args)
    }
}

#[test]
fn philox_gives_the_known_answers_and_the_cpu_words() {
    cuda_checks::philox_gives_the_known_answers_and_the_cpu_words(&Emulated);
}

#[test]
fn dropout_masks_are_the_cpu_bits() {
    cuda_checks::dropout_masks_are_the_cpu_bits(&Emulated);
}

#[test]
fn head_dropout_is_the_cpu_bits() {
    cuda_checks::head_dropout_is_the_cpu_bits(&Emulated);
}

#[test]
fn row_gathers_and_bf16_rounding_are_exact() {
    cuda_checks::row_gathers_and_bf16_rounding_are_exact(&Emulated);
}

#[test]
fn rmsnorm_matches_the_reference() {
    cuda_checks::rmsnorm_matches_the_reference(&Emulated);
}

#[test]
fn rope_matches_the_cpu_rotation() {
    cuda_checks::rope_matches_the_cpu_rotation(&Emulated);
}

#[test]
fn attention_matches_the_reference_on_packed_sequences() {
    cuda_checks::attention_matches_the_reference_on_packed_sequences(&Emulated);
}

#[test]
fn pointwise_kernels_match_the_cpu_functions() {
    cuda_checks::pointwise_kernels_match_the_cpu_functions(&Emulated);
}

#[test]
fn mean_pool_is_the_cpu_f64_mean() {
    cuda_checks::mean_pool_is_the_cpu_f64_mean(&Emulated);
}

#[test]
fn label_stats_match_the_definitions() {
    cuda_checks::label_stats_match_the_definitions(&Emulated);
}

/// Every check of cuda_checks.rs runs above.
#[test]
fn every_check_runs_here() {
    let names: Vec<&str> = cuda_checks::CHECKS.iter().map(|(n, _)| *n).collect();
    let this = include_str!("cuda_emulated.rs");
    for n in names {
        assert!(
            this.contains(&format!("cuda_checks::{n}(&Emulated)")),
            "check {n} is not run"
        );
    }
}
