//! The GPU forward pass (runtime/src/engine/gpu.rs: its launches, buffer layouts, packing and
//! chunking) against the CPU engine, on a backend that runs the CUDA kernel source on the CPU
//! emulation (kernels/cuda/emulate/) and does the matrix products in f64 on the host. What it
//! cannot check is cudarc and cuBLAS themselves (scripts/gpu-check.sh does, on a GPU); what it
//! checks is everything the GPU backend computes around them, on every CI machine.
//!
//! Needs a C++20 compiler (`$CXX`, else `c++`); without one the tests say so and pass,
//! except under CI (`CI` set). Test names start with `gpu_` (scripts/test.sh skips them at the
//! lower CPU levels: they do not depend on the CPU's kernels); `EMCODER_CUDA_EMULATION=off`
//! skips them (the AArch64 suite, under qemu).

#[path = "../kernels/emu_harness.rs"]
mod emu_harness;

use emcoder::engine::forward::Dropout;
use emcoder::engine::gpu::{upload, Arg, Backend, Elem, GpuForward, Mat};
use emcoder::{LoadOptions, Model, Precision, Stop, TokenizerChoice};
use emu_harness::HArg;
use std::cell::RefCell;
use std::path::{Path, PathBuf};

/// A device buffer of the emulation: host memory.
enum Buf {
    W32(RefCell<Vec<u32>>),
    W16(RefCell<Vec<u16>>),
}

impl Buf {
    fn same(&self, other: &Buf) -> bool {
        std::ptr::eq(self, other)
    }
}

/// The emulated device (the harness is built for the model's head width on first use).
struct Emu {
    head_dim: usize,
    launches: RefCell<usize>,
}

impl Emu {
    /// None when the emulation cannot run here (emulation off, no compiler).
    fn new(head_dim: usize) -> Option<Emu> {
        emu_harness::harness(head_dim)?;
        Some(Emu {
            head_dim,
            launches: RefCell::new(0),
        })
    }
}

impl Backend for Emu {
    type Buf = Buf;
    fn upload_f32(&self, v: &[f32]) -> emcoder::Result<Buf> {
        Ok(Buf::W32(RefCell::new(
            v.iter().map(|x| x.to_bits()).collect(),
        )))
    }
    fn upload_u32(&self, v: &[u32]) -> emcoder::Result<Buf> {
        Ok(Buf::W32(RefCell::new(v.to_vec())))
    }
    fn upload_u16(&self, v: &[u16]) -> emcoder::Result<Buf> {
        Ok(Buf::W16(RefCell::new(v.to_vec())))
    }
    fn zeros_f32(&self, n: usize) -> emcoder::Result<Buf> {
        // NaN, not zeros: a kernel that leaves an element unwritten shows.
        Ok(Buf::W32(RefCell::new(vec![f32::NAN.to_bits(); n])))
    }
    fn zeros_u16(&self, n: usize) -> emcoder::Result<Buf> {
        Ok(Buf::W16(RefCell::new(vec![0x7fc0; n])))
    }
    fn download_f32(&self, b: &Buf, n: usize) -> emcoder::Result<Vec<f32>> {
        match b {
            Buf::W32(v) => Ok(v.borrow()[..n].iter().map(|x| f32::from_bits(*x)).collect()),
            Buf::W16(_) => panic!("download_f32 of a u16 buffer"),
        }
    }
    fn launch(
        &self,
        name: &'static str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg<'_, Buf>],
    ) -> emcoder::Result<()> {
        *self.launches.borrow_mut() += 1;
        let hargs: Vec<HArg> = args
            .iter()
            .enumerate()
            .map(|(i, a)| match a {
                Arg::Buf(b, off) => {
                    // The same buffer again (a kernel in place): a pointer into the first.
                    let first = args[..i]
                        .iter()
                        .position(|x| matches!(x, Arg::Buf(e, _) if e.same(b)));
                    if let Some(j) = first {
                        let Arg::Buf(_, off_j) = args[j] else {
                            unreachable!()
                        };
                        assert!(
                            *off >= off_j,
                            "{name}: aliased argument before its first use"
                        );
                        return HArg::Ref(j, off - off_j);
                    }
                    match b {
                        Buf::W32(v) => HArg::B32(v.borrow()[*off..].to_vec()),
                        Buf::W16(v) => HArg::B16(v.borrow()[*off..].to_vec()),
                    }
                }
                Arg::Null => HArg::Null,
                Arg::I32(x) => HArg::Scalar(*x as u32 as u64),
                Arg::U32(x) => HArg::Scalar(*x as u64),
                Arg::F32(x) => HArg::Scalar(x.to_bits() as u64),
                Arg::I64(x) => HArg::Scalar(*x as u64),
            })
            .collect();
        let out = emu_harness::run(self.head_dim, name, grid, block, &hargs)
            .expect("the harness was built in Emu::new");
        for (a, w) in args.iter().zip(out) {
            let (Arg::Buf(b, off), Some(w)) = (a, w) else {
                continue; // not a buffer, or an alias: written back through its first use
            };
            match b {
                Buf::W32(v) => v.borrow_mut()[*off..].copy_from_slice(&w),
                Buf::W16(v) => v.borrow_mut()[*off..]
                    .iter_mut()
                    .zip(w)
                    .for_each(|(d, s)| *d = s as u16),
            }
        }
        Ok(())
    }
    fn synchronize(&self) -> emcoder::Result<()> {
        Ok(())
    }
    /// Fewer threads per RMSNorm block than a GPU's 256: every block's threads are OS threads
    /// meeting at barriers here.
    fn reduce_threads(&self) -> u32 {
        16
    }
    fn gemm(
        &self,
        elem: Elem,
        y: Mat<'_, Buf>,
        x: Mat<'_, Buf>,
        w: &Buf,
        m: usize,
        n: usize,
        k: usize,
    ) -> emcoder::Result<()> {
        let val = |b: &Buf, i: usize| -> f64 {
            match b {
                Buf::W32(v) => f32::from_bits(v.borrow()[i]) as f64,
                Buf::W16(v) => half::bf16::from_bits(v.borrow()[i]).to_f32() as f64,
            }
        };
        match elem {
            Elem::F32 => assert!(matches!(w, Buf::W32(_)) && matches!(x.buf, Buf::W32(_))),
            Elem::Bf16 => assert!(matches!(w, Buf::W16(_)) && matches!(x.buf, Buf::W16(_))),
        }
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| val(x.buf, x.offset + i * x.ld + p) * val(w, j * k + p))
                    .sum();
                out[i * n + j] = s as f32;
            }
        }
        let Buf::W32(yv) = y.buf else {
            panic!("gemm output must be f32")
        };
        let mut yv = yv.borrow_mut();
        for i in 0..m {
            for j in 0..n {
                yv[y.offset + i * y.ld + j] = out[i * n + j].to_bits();
            }
        }
        Ok(())
    }
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

fn cpu_model(name: &str, precision: Precision) -> Model {
    let opts = LoadOptions {
        n_threads: 2,
        tokenizer: TokenizerChoice::None,
        precision,
        ..Default::default()
    };
    Model::load(&fixture(name), &opts).unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Texts of mixed lengths, one past the attention's query block (64) and key tile (32).
fn texts(vocab: usize) -> Vec<Vec<u32>> {
    let mk = |len: usize, s: usize| -> Vec<u32> {
        let mut t = vec![1u32];
        t.extend((0..len - 2).map(|i| ((i * 7 + s * 13) % (vocab - 3) + 3) as u32));
        t.push(2);
        t
    };
    vec![mk(4, 0), mk(9, 1), mk(70, 2), mk(2, 3)]
}

/// f32: the deterministic pass and a seeded MC run agree with the CPU engine within the
/// goldens' 1e-4 (the masks are the same function), on full and partial rotation and fused
/// biases; chunking (max_rows) does not change a bit.
#[test]
fn gpu_f32_forward_matches_the_cpu_engine() {
    for name in ["tiny-f32", "tiny-rot-partial", "tiny-fused-bias"] {
        let model = cpu_model(name, Precision::F32);
        let cfg = model.config();
        let Some(emu) = Emu::new(cfg.head_dim()) else {
            return;
        };
        let w = upload(&emu, &model.files().weights, Elem::F32).unwrap();
        let ids = texts(cfg.vocab_size);
        let fw = |max_rows| GpuForward {
            g: &emu,
            cfg,
            w: &w,
            max_rows,
        };
        let never = Stop::never();

        let det = fw(16384).run(&ids, 0..1, None, &never).unwrap();
        let cpu = model.logits(&ids).unwrap();
        let e = max_diff(&det, &cpu);
        eprintln!("{name}: deterministic logits, max |gpu - cpu| = {e:e}");
        assert!(e <= 1e-4, "{name}: deterministic logits differ by {e}");

        let (n, seed) = (3u32, 11u64);
        let dropout = Some(Dropout {
            seed,
            p: cfg.dropout,
        });
        assert!(cfg.dropout > 0.0, "{name}: the fixture has dropout");
        let mc = fw(16384).run(&ids, 0..n, dropout, &never).unwrap();
        let cpu_mc = model.sample_logits(&ids, n, seed).unwrap();
        let e = max_diff(&mc, &cpu_mc);
        eprintln!("{name}: MC logits (N={n}), max |gpu - cpu| = {e:e}");
        assert!(e <= 1e-4, "{name}: MC logits differ by {e}");
        // Dropout changes the logits (the masks are applied at all).
        assert!(max_diff(&mc[..cfg.num_labels], &det[..cfg.num_labels]) > 1e-4);

        // Chunks of 10 rows (the 70-token text alone) and a later block of samples: the
        // same bits as one chunk (the block continues the sample indices). On the first
        // fixture only (the packing does not depend on the weights; CI time).
        if name != "tiny-f32" {
            continue;
        }
        let small = fw(10).run(&ids, 0..n, dropout, &never).unwrap();
        assert!(small == mc, "{name}: chunking changed the result");
        let later = fw(16384).run(&ids, 1..n, dropout, &never).unwrap();
        let nl = cfg.num_labels;
        for t in 0..ids.len() {
            let a = &mc[(t * n as usize + 1) * nl..(t + 1) * n as usize * nl];
            let b = &later[t * (n as usize - 1) * nl..(t + 1) * (n as usize - 1) * nl];
            assert!(
                a == b,
                "{name}: text {t}: samples 1.. of a run differ from a run of samples 1.."
            );
        }
        eprintln!("{name}: {} kernel launches", emu.launches.borrow());
    }
}

/// bf16 weights and activations with f32 accumulation: within the bf16 tolerance of the
/// CPU engine's bf16 path (the products' summation order differs).
#[test]
fn gpu_bf16_forward_matches_the_cpu_engine() {
    for name in ["tiny-bf16", "tiny-f32"] {
        let model = cpu_model(name, Precision::Bf16);
        let cfg = model.config();
        let Some(emu) = Emu::new(cfg.head_dim()) else {
            return;
        };
        let w = upload(&emu, &model.files().weights, Elem::Bf16).unwrap();
        let ids = texts(cfg.vocab_size);
        let fw = GpuForward {
            g: &emu,
            cfg,
            w: &w,
            max_rows: 16384,
        };
        let (n, seed) = (2u32, 5u64);
        let dropout = Some(Dropout {
            seed,
            p: cfg.dropout,
        });
        let mc = fw.run(&ids, 0..n, dropout, &Stop::never()).unwrap();
        let cpu = model.sample_logits(&ids, n, seed).unwrap();
        let sig = |z: &[f32]| {
            z.iter()
                .map(|v| 1.0 / (1.0 + (-v).exp()))
                .collect::<Vec<f32>>()
        };
        let e = max_diff(&sig(&mc), &sig(&cpu));
        eprintln!("{name}: bf16 MC probabilities, max |gpu - cpu| = {e:e}");
        assert!(e <= 0.01, "{name}: bf16 probabilities differ by {e}");
    }
}
