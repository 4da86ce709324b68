//! The CUDA kernels (kernels/cuda/emcoder.cu) on the CPU through the emulation in
//! kernels/cuda/emulate/ (the same source, compiled as C++ with the host's compiler), checked
//! by tests/kernels/cuda_checks.rs against the CPU engine, so that every kernel is checked on
//! every CI machine, GPU or not (scripts/gpu-check.sh runs the same checks on a GPU).
//!
//! Needs a C++20 compiler (`$CXX`, else `c++`): without one the tests say so and pass,
//! except under CI (`CI` set), where a missing compiler fails them.

#[path = "cuda_checks.rs"]
mod cuda_checks;

use cuda_checks::{Launch, A};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The harness binary for a head width (HEAD_DIM is a compile-time constant of the source),
/// built once per test process; None when no C++ compiler is there (outside CI).
fn harness(head_dim: usize) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<usize, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry(head_dim)
        .or_insert_with(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            let src = root.join("cuda/emulate/harness.cpp");
            let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("cuda-emu-hd{head_dim}-{}", std::process::id()));
            let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
            let result = Command::new(&cxx)
                .args(["-std=c++20", "-O1", "-pthread", "-ffp-contract=off"])
                .arg(format!("-DHEAD_DIM={head_dim}"))
                .arg("-o")
                .arg(&out)
                .arg(&src)
                .output();
            match result {
                Ok(o) if o.status.success() => Some(out),
                Ok(o) => panic!(
                    "the CUDA emulation harness does not compile with {cxx}:\n{}",
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => {
                    assert!(
                        std::env::var_os("CI").is_none(),
                        "no C++ compiler ({cxx}: {e}): CI must run the CUDA kernels' emulated tests"
                    );
                    eprintln!("SKIPPED: no C++ compiler ({cxx}: {e}); set CXX to run the CUDA kernels' emulated tests");
                    None
                }
            }
        })
        .clone()
}

/// Runs `kernel` over grid x block on the emulation; the buffers in `args` are replaced by
/// their contents afterwards. False when the tests are skipped (no compiler).
fn launch(head_dim: usize, kernel: &str, grid: [u32; 3], block: [u32; 3], args: &mut [A]) -> bool {
    let Some(bin) = harness(head_dim) else {
        return false;
    };
    let mut input = format!(
        "{kernel} {} {} {} {} {} {} {}\n",
        grid[0],
        grid[1],
        grid[2],
        block[0],
        block[1],
        block[2],
        args.len()
    );
    let words = |input: &mut String, tag: &str, w: &mut dyn Iterator<Item = u32>| {
        let w: Vec<u32> = w.collect();
        input.push_str(&format!("{tag} {:x}", w.len()));
        for x in w {
            input.push_str(&format!(" {x:x}"));
        }
        input.push('\n');
    };
    for a in args.iter() {
        match a {
            A::F(v) => words(&mut input, "b32", &mut v.iter().map(|x| x.to_bits())),
            A::U(v) => words(&mut input, "b32", &mut v.iter().copied()),
            A::I(v) => words(&mut input, "b32", &mut v.iter().map(|x| *x as u32)),
            A::H(v) => words(&mut input, "b16", &mut v.iter().map(|x| *x as u32)),
            A::Null => input.push_str("null\n"),
            A::Int(x) => input.push_str(&format!("s {:x}\n", *x as u32)),
            A::Uns(x) => input.push_str(&format!("s {x:x}\n")),
            A::Flt(x) => input.push_str(&format!("s {:x}\n", x.to_bits())),
            A::Long(x) => input.push_str(&format!("s {:x}\n", *x as u64)),
        }
    }
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the emulation harness");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{kernel}: harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), args.len(), "{kernel}: harness output");
    for (a, line) in args.iter_mut().zip(lines) {
        let mut it = line.split(' ');
        let tag = it.next().unwrap();
        if tag == "-" {
            continue;
        }
        let n = usize::from_str_radix(it.next().unwrap(), 16).unwrap();
        let w: Vec<u32> = it.map(|x| u32::from_str_radix(x, 16).unwrap()).collect();
        assert_eq!(w.len(), n);
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
