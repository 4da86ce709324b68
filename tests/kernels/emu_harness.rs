//! The CUDA emulation's harness (kernels/cuda/emulate/harness.cpp) from Rust tests: built
//! once per head width and test process, and its stdin/stdout protocol. Shared by
//! tests/kernels/cuda_emulated.rs (kernel checks) and tests/runtime/gpu_emulated.rs (the
//! GPU forward).
//!
//! `EMCODER_CUDA_EMULATION=off` skips what uses it (the AArch64 suite, under qemu: it tests
//! no CPU code). Needs a C++20 compiler (`$CXX`, else `c++`): without one the tests say so and
//! pass, except under CI (`CI` set), where a missing compiler fails them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// One kernel argument as the harness reads it.
pub enum HArg {
    /// A buffer of 32-bit words (f32 bits, u32, i32).
    B32(Vec<u32>),
    /// A buffer of 16-bit words (bf16).
    B16(Vec<u16>),
    /// A pointer `off` elements into the buffer of an earlier argument (in-place kernels).
    Ref(usize, usize),
    /// A null pointer.
    Null,
    /// A scalar's bits (int, unsigned, float, long long).
    Scalar(u64),
}

/// The harness binary for a head width (HEAD_DIM is a compile-time constant of the source);
/// None when the emulation is off or no C++ compiler is there (outside CI).
pub fn harness(head_dim: usize) -> Option<PathBuf> {
    static BUILT: OnceLock<Mutex<HashMap<usize, Option<PathBuf>>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    built
        .entry(head_dim)
        .or_insert_with(|| {
            if std::env::var_os("EMCODER_CUDA_EMULATION").is_some_and(|v| v == "off") {
                eprintln!("SKIPPED: EMCODER_CUDA_EMULATION=off");
                return None;
            }
            let src = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../kernels/cuda/emulate/harness.cpp");
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
                        "no C++ compiler ({cxx}: {e}): CI must run the CUDA emulation's tests"
                    );
                    eprintln!("SKIPPED: no C++ compiler ({cxx}: {e}); set CXX to run the CUDA emulation's tests");
                    None
                }
            }
        })
        .clone()
}

/// Runs `kernel` over grid x block on the emulation. Per argument: the buffer's words after
/// the kernel (None for the other kinds). None when the emulation cannot run here.
pub fn run(
    head_dim: usize,
    kernel: &str,
    grid: [u32; 3],
    block: [u32; 3],
    args: &[HArg],
) -> Option<Vec<Option<Vec<u32>>>> {
    let bin = harness(head_dim)?;
    let [gx, gy, gz] = grid;
    let [bx, by, bz] = block;
    let mut input = format!("{kernel} {gx} {gy} {gz} {bx} {by} {bz} {}\n", args.len());
    fn words(input: &mut String, tag: &str, w: &mut dyn ExactSizeIterator<Item = u32>) {
        input.push_str(&format!("{tag} {:x}", w.len()));
        for x in w {
            input.push_str(&format!(" {x:x}"));
        }
        input.push('\n');
    }
    for a in args {
        match a {
            HArg::B32(v) => words(&mut input, "b32", &mut v.iter().copied()),
            HArg::B16(v) => words(&mut input, "b16", &mut v.iter().map(|x| *x as u32)),
            HArg::Ref(j, off) => input.push_str(&format!("ref {j:x} {off:x}\n")),
            HArg::Null => input.push_str("null\n"),
            HArg::Scalar(x) => input.push_str(&format!("s {x:x}\n")),
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
        "{kernel}: the harness failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), args.len(), "{kernel}: the harness's output");
    Some(
        lines
            .iter()
            .map(|line| {
                let mut it = line.split(' ');
                if it.next() == Some("-") {
                    return None;
                }
                let n = usize::from_str_radix(it.next().unwrap(), 16).unwrap();
                let w: Vec<u32> = it.map(|x| u32::from_str_radix(x, 16).unwrap()).collect();
                assert_eq!(w.len(), n, "{kernel}: a buffer's length");
                Some(w)
            })
            .collect(),
    )
}
