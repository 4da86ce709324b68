//! The CUDA backend's device layer (cargo feature `cuda`): opening a GPU without ever
//! panicking or aborting, and compiling the kernels of `kernels/cuda/emcoder.cu` for it with
//! NVRTC.
//!
//! cudarc loads the driver (`libcuda.so`), NVRTC and cuBLAS at run time (its
//! `dynamic-loading` feature), so a build with this feature needs no CUDA toolkit and runs
//! unchanged on a machine without one; but cudarc panics when it first touches a library
//! that is not there. Every entry point here therefore checks that the library is present
//! first and runs the cudarc calls under `catch_unwind`, so that a missing or broken CUDA
//! installation is an [`Error::Device`] that says what to install, and the process goes on
//! with the CPU.

use crate::error::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// The CUDA C source of the kernels (compiled at load for the device's architecture).
pub const SOURCE: &str = include_str!("../../kernels/cuda/emcoder.cu");

/// Every kernel (`extern "C" __global__`) of [`SOURCE`]; all are looked up when a model is
/// opened on a GPU, so a missing one is a load error, not a failure in the middle of a call.
pub const KERNELS: [&str; 13] = [
    "philox_words",
    "dropout_residual_add",
    "dropout_inplace",
    "gather_rows",
    "gather_rows_bf16",
    "f32_to_bf16",
    "rmsnorm",
    "rope",
    "attention",
    "swiglu",
    "bias_act",
    "mean_pool",
    "label_stats",
];

/// The attention kernel keeps a query row and its accumulator in registers and a key tile in
/// 48 KB of static shared memory: head widths up to this.
pub const MAX_HEAD_DIM: usize = 128;

/// Runs a closure that calls into cudarc, turning a panic into an [`Error::Device`].
fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            Err(Error::Device(format!(
                "{what}: the CUDA libraries failed ({msg}); check the NVIDIA driver and CUDA installation, or use the CPU"
            )))
        }
    }
}

/// Whether the NVIDIA driver library can be loaded (checked before any cudarc driver call).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the library by its usual names.
    catch_unwind(|| unsafe { cudarc::driver::sys::is_culib_present() }).unwrap_or(false)
}

/// Whether the NVRTC library (the compiler of the kernels) can be loaded.
pub fn nvrtc_present() -> bool {
    // SAFETY: as above.
    catch_unwind(|| unsafe { cudarc::nvrtc::sys::is_culib_present() }).unwrap_or(false)
}

const NO_DRIVER: &str = "no NVIDIA driver library (libcuda.so) was found: this machine has no NVIDIA driver installed or it is not on the library path (ldconfig, LD_LIBRARY_PATH); install the driver, or use the CPU device";

const NO_NVRTC: &str = "the NVRTC library (libnvrtc.so), which compiles emcoder's kernels for the GPU when a model is loaded, was not found: install it (`pip install nvidia-cuda-nvrtc` of the driver's CUDA version, or the CUDA toolkit) and put its lib folder on LD_LIBRARY_PATH";

/// The number of CUDA devices the driver sees.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(Error::Device(NO_DRIVER.into()));
    }
    guarded("counting CUDA devices", || {
        CudaContext::device_count()
            .map(|n| n.max(0) as usize)
            .map_err(|e| {
                Error::Device(format!(
                    "the NVIDIA driver is installed but reports no usable GPU ({e}): check `nvidia-smi`, or use the CPU device"
                ))
            })
    })
}

/// What NVRTC produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// PTX for the virtual architecture `compute_XY` (for ptxas and inspection; a driver
    /// only loads PTX of its own CUDA version or older).
    Ptx,
    /// Machine code for `sm_XY` (what a model loads: no JIT at load, and it runs on any
    /// driver of NVRTC's major version, which PTX from a newer NVRTC does not).
    Cubin,
}

/// NVRTC options for the kernels of a model with heads of `head_dim` channels, for
/// compute capability `cc`.
pub fn compile_options(head_dim: usize, cc: (i32, i32), code: Code) -> Vec<String> {
    let arch = match code {
        Code::Ptx => "compute",
        Code::Cubin => "sm",
    };
    vec![
        format!("--gpu-architecture={arch}_{}{}", cc.0, cc.1),
        format!("-DHEAD_DIM={head_dim}"),
        // Precise division and square root, no flush to zero (the defaults, stated): the
        // kernels are checked against the CPU engine within f32 ulps.
        "--prec-div=true".into(),
        "--prec-sqrt=true".into(),
        "--ftz=false".into(),
    ]
}

/// The NVRTC library's version, when it loads.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    guarded("asking NVRTC its version", || {
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two out-parameters.
        let r = unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) };
        Ok((r == cudarc::nvrtc::sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor)))
    })
    .ok()
    .flatten()
}

/// The compute capabilities (as 10 major + minor) this NVRTC compiles for.
fn nvrtc_archs() -> Vec<i32> {
    use cudarc::nvrtc::sys;
    let mut n = 0;
    // SAFETY: an out-parameter, then a buffer of the size it gave.
    unsafe {
        if sys::nvrtcGetNumSupportedArchs(&mut n) != sys::nvrtcResult::NVRTC_SUCCESS || n <= 0 {
            return Vec::new();
        }
        let mut archs = vec![0; n as usize];
        if sys::nvrtcGetSupportedArchs(archs.as_mut_ptr()) != sys::nvrtcResult::NVRTC_SUCCESS {
            return Vec::new();
        }
        archs
    }
}

/// An NVRTC program, destroyed on drop.
struct Program(cudarc::nvrtc::sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program, destroyed once.
        let _ = unsafe { cudarc::nvrtc::result::destroy_program(self.0) };
    }
}

/// Compiles [`SOURCE`] with NVRTC (no GPU needed; the NVRTC library is) to PTX or to
/// machine code for compute capability `cc`.
pub fn compile(head_dim: usize, cc: (i32, i32), code: Code) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    if head_dim == 0 || head_dim > MAX_HEAD_DIM {
        return Err(Error::Device(format!(
            "the CUDA attention kernel supports head widths 1..={MAX_HEAD_DIM}; this model's is {head_dim}: use the CPU device"
        )));
    }
    let Some((major, minor)) = nvrtc_version() else {
        return Err(Error::Device(NO_NVRTC.into()));
    };
    guarded("compiling the CUDA kernels", || {
        let archs = nvrtc_archs();
        if !archs.contains(&(cc.0 * 10 + cc.1)) {
            return Err(Error::Device(format!(
                "NVRTC {major}.{minor} cannot compile for compute capability {}.{} (it knows {archs:?}): install an NVRTC that supports this GPU",
                cc.0, cc.1
            )));
        }
        let nvrtc_err = |what: &str, e: result::NvrtcError| {
            Error::Device(format!("NVRTC {major}.{minor}: {what} failed ({e:?})"))
        };
        let src = std::ffi::CString::new(SOURCE).expect("the kernel source has no NUL");
        let prog = Program(
            result::create_program(&src, Some(c"emcoder.cu"))
                .map_err(|e| nvrtc_err("creating the program", e))?,
        );
        let opts = compile_options(head_dim, cc, code);
        // SAFETY: a live program; options without NUL bytes.
        if let Err(e) = unsafe { result::compile_program(prog.0, &opts) } {
            // SAFETY: as above.
            let log = unsafe { result::get_program_log(prog.0) }.unwrap_or_default();
            let log: Vec<u8> = log
                .iter()
                .map(|&c| c as u8)
                .take_while(|&c| c != 0)
                .collect();
            return Err(Error::Device(format!(
                "NVRTC {major}.{minor} could not compile emcoder's kernels ({e:?}, options {opts:?}): {}",
                String::from_utf8_lossy(&log)
            )));
        }
        let mut size = 0usize;
        let mut out;
        // SAFETY: a compiled program; the buffer has the size NVRTC gave.
        unsafe {
            type SizeFn = unsafe fn(sys::nvrtcProgram, *mut usize) -> sys::nvrtcResult;
            type GetFn = unsafe fn(sys::nvrtcProgram, *mut std::ffi::c_char) -> sys::nvrtcResult;
            let (size_fn, get_fn): (SizeFn, GetFn) = match code {
                Code::Ptx => (sys::nvrtcGetPTXSize, sys::nvrtcGetPTX),
                Code::Cubin => (sys::nvrtcGetCUBINSize, sys::nvrtcGetCUBIN),
            };
            let r = size_fn(prog.0, &mut size);
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(nvrtc_err("reading the output size", result::NvrtcError(r)));
            }
            out = vec![0u8; size];
            let r = get_fn(prog.0, out.as_mut_ptr().cast());
            if r != sys::nvrtcResult::NVRTC_SUCCESS {
                return Err(nvrtc_err("reading the output", result::NvrtcError(r)));
            }
        }
        if code == Code::Ptx {
            // PTX comes NUL-terminated.
            while out.last() == Some(&0) {
                out.pop();
            }
        }
        Ok(out)
    })
}

/// An opened GPU with the kernels compiled for it.
pub struct CudaDevice {
    /// Device ordinal.
    pub ordinal: usize,
    /// The GPU's name, e.g. "NVIDIA H200".
    pub name: String,
    /// Compute capability (major, minor), e.g. (9, 0) on Hopper.
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_memory: usize,
    ctx: Arc<CudaContext>,
    functions: Vec<(&'static str, CudaFunction)>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cuda:{} ({}, compute capability {}.{}, {:.1} GB)",
            self.ordinal,
            self.name,
            self.compute_capability.0,
            self.compute_capability.1,
            self.total_memory as f64 / 1e9
        )
    }
}

impl CudaDevice {
    /// Opens GPU `ordinal` and compiles the kernels for heads of `head_dim` channels. Every
    /// failure (no driver, no such GPU, no NVRTC, a compile or load error) is an
    /// [`Error::Device`] naming the device and what to do.
    pub fn open(ordinal: usize, head_dim: usize) -> Result<CudaDevice> {
        let n = device_count()?;
        if ordinal >= n {
            return Err(Error::Device(if n == 0 {
                format!("cuda:{ordinal} does not exist: the NVIDIA driver sees no GPU on this machine; use the CPU device")
            } else {
                format!(
                    "cuda:{ordinal} does not exist: this machine has {n} GPU(s), cuda:0 to cuda:{}",
                    n - 1
                )
            }));
        }
        let at = |e: &dyn std::fmt::Display, what: &str| {
            Error::Device(format!("cuda:{ordinal}: {what} failed ({e})"))
        };
        let (ctx, name, cc, total) = guarded(&format!("opening cuda:{ordinal}"), || {
            let ctx = CudaContext::new(ordinal).map_err(|e| at(&e, "creating a context"))?;
            let name = ctx.name().map_err(|e| at(&e, "reading the name"))?;
            let cc = ctx
                .compute_capability()
                .map_err(|e| at(&e, "reading the compute capability"))?;
            let total = ctx
                .total_mem()
                .map_err(|e| at(&e, "reading the memory size"))?;
            Ok((ctx, name, cc, total))
        })?;
        let cubin = compile(head_dim, cc, Code::Cubin)
            .map_err(|e| Error::Device(format!("cuda:{ordinal} ({name}): {e}")))?;
        let functions = guarded(&format!("loading the kernels on cuda:{ordinal}"), || {
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                .map_err(|e| {
                    Error::Device(format!(
                        "cuda:{ordinal} ({name}) did not load the kernels compiled by NVRTC {:?} ({e}): install the NVRTC of the driver's CUDA major version",
                        nvrtc_version()
                    ))
                })?;
            KERNELS
                .iter()
                .map(|k| {
                    module
                        .load_function(k)
                        .map(|f| (*k, f))
                        .map_err(|e| at(&e, &format!("finding kernel {k}")))
                })
                .collect::<Result<Vec<_>>>()
        })?;
        Ok(CudaDevice {
            ordinal,
            name,
            compute_capability: cc,
            total_memory: total,
            ctx,
            functions,
        })
    }

    /// Fails with what to do when the GPU has less than `bytes` of free memory for `what`.
    pub fn check_free_memory(&self, bytes: usize, what: &str) -> Result<()> {
        let (free, _) = guarded("reading free GPU memory", || {
            self.ctx.mem_get_info().map_err(|e| {
                Error::Device(format!(
                    "cuda:{}: reading free memory failed ({e})",
                    self.ordinal
                ))
            })
        })?;
        if free < bytes {
            return Err(Error::OutOfMemory(format!(
                "cuda:{} ({}) has {:.1} MB free, {what} needs {:.1} MB: free GPU memory (other processes: nvidia-smi), or use the CPU device",
                self.ordinal,
                self.name,
                free as f64 / 1e6,
                bytes as f64 / 1e6
            )));
        }
        Ok(())
    }

    /// A kernel by name (one of [`KERNELS`]).
    pub fn function(&self, name: &str) -> Option<&CudaFunction> {
        self.functions
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| f)
    }

    /// The context (for streams and memory).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel named in KERNELS is defined in the source, and the other way round.
    #[test]
    fn kernel_list_matches_the_source() {
        let defined: Vec<&str> = SOURCE
            .split("extern \"C\" __global__ void ")
            .skip(1)
            .map(|s| s.split('(').next().unwrap())
            .collect();
        assert_eq!(defined, KERNELS);
    }

    /// Without a driver (this CI), opening a GPU is an error that says what to install;
    /// never a panic. With one, an ordinal past the last GPU names the range.
    #[test]
    fn opening_a_gpu_fails_cleanly() {
        let e = CudaDevice::open(usize::MAX, 64).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, Error::Device(_)), "{msg}");
        if driver_present() {
            eprintln!("a driver library is present: {msg}");
            assert!(
                msg.contains("does not exist") || msg.contains("no usable GPU"),
                "{msg}"
            );
        } else {
            assert!(msg.contains("no NVIDIA driver library"), "{msg}");
            let e = device_count().unwrap_err();
            assert!(e.to_string().contains("install the driver"), "{e}");
        }
    }

    #[test]
    fn head_widths_outside_the_kernel_are_refused() {
        for hd in [0, MAX_HEAD_DIM + 1] {
            let e = compile(hd, (9, 0), Code::Cubin).unwrap_err().to_string();
            assert!(e.contains("head widths 1..=128"), "{e}");
        }
    }

    #[test]
    fn options_name_the_architecture_and_head_width() {
        let o = compile_options(64, (9, 0), Code::Ptx);
        assert!(o.contains(&"--gpu-architecture=compute_90".to_string()));
        assert!(o.contains(&"-DHEAD_DIM=64".to_string()));
        let o = compile_options(32, (8, 6), Code::Cubin);
        assert!(o.contains(&"--gpu-architecture=sm_86".to_string()));
    }

    /// NVRTC compiles the kernels for Hopper (machine code, as a model loads them, and PTX)
    /// at the head widths the attention kernel takes, wherever the library is present
    /// (scripts/cuda-compile-check.sh installs the NVRTC of the GPU machine's CUDA version,
    /// sets EMCODER_REQUIRE_NVRTC, and runs ptxas on the PTX written to EMCODER_PTX_DIR);
    /// skipped, saying so, where it is not.
    #[test]
    fn kernels_compile_with_nvrtc() {
        let Some(version) = nvrtc_version() else {
            assert!(
                std::env::var_os("EMCODER_REQUIRE_NVRTC").is_none(),
                "EMCODER_REQUIRE_NVRTC is set but libnvrtc cannot be loaded (LD_LIBRARY_PATH?)"
            );
            eprintln!("SKIPPED: no NVRTC library (scripts/cuda-compile-check.sh installs one)");
            return;
        };
        eprintln!("NVRTC {version:?}");
        let dir = std::env::var_os("EMCODER_PTX_DIR").map(std::path::PathBuf::from);
        for (hd, cc) in [(64, (9, 0)), (32, (9, 0)), (128, (9, 0)), (64, (8, 0))] {
            let ptx =
                compile(hd, cc, Code::Ptx).unwrap_or_else(|e| panic!("hd {hd} cc {cc:?}: {e}"));
            let ptx = String::from_utf8(ptx).expect("PTX is text");
            for k in KERNELS {
                assert!(
                    ptx.contains(&format!(".entry {k}(")),
                    "hd {hd}: no entry {k} in the PTX"
                );
            }
            let cubin =
                compile(hd, cc, Code::Cubin).unwrap_or_else(|e| panic!("hd {hd} cc {cc:?}: {e}"));
            assert_eq!(&cubin[..4], b"\x7fELF", "a cubin is an ELF file");
            if let Some(dir) = &dir {
                std::fs::create_dir_all(dir).unwrap();
                let f = dir.join(format!("emcoder-hd{hd}-sm{}{}.ptx", cc.0, cc.1));
                std::fs::write(&f, ptx).unwrap();
            }
        }
        // An architecture NVRTC does not know is an error naming it.
        let e = compile(64, (1, 0), Code::Cubin).unwrap_err().to_string();
        assert!(
            e.contains("cannot compile for compute capability 1.0"),
            "{e}"
        );
    }
}
