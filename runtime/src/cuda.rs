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

use crate::engine::forward::Dropout;
use crate::engine::gpu::{upload, upload_bytes, Arg, Backend, DevWeights, Elem, GpuForward, Mat};
use crate::engine::stop::Stop;
use crate::error::{Error, Result};
use crate::model::{Config, ModelFiles};
use cudarc::cublas::CudaBlas;
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg,
};
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

/// Kernel launches and cuBLAS calls queued by this process (`emcoder bench` reports the
/// count per call: launch overhead is what a short call pays).
static LAUNCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Kernel launches and cuBLAS products queued so far by this process.
pub fn launches() -> u64 {
    LAUNCHES.load(std::sync::atomic::Ordering::Relaxed)
}

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

/// The kernels' machine code for (head width, compute capability), compiled once per process
/// (a compile takes about a second; a process keeps one per pair it has used, a few hundred
/// KB each).
fn compiled(head_dim: usize, cc: (i32, i32)) -> Result<Vec<u8>> {
    type Cache = std::sync::Mutex<Vec<((usize, (i32, i32)), Vec<u8>)>>;
    static CACHE: std::sync::OnceLock<Cache> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    // Held while compiling: concurrent loads of the same model wait for one compile.
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, code)) = c.iter().find(|(k, _)| *k == (head_dim, cc)) {
        return Ok(code.clone());
    }
    let code = compile(head_dim, cc, Code::Cubin)?;
    c.push(((head_dim, cc), code.clone()));
    Ok(code)
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
            // No event tracking: every call runs on a stream of its own (CudaBackend) over
            // buffers it alone uses, and the weights are only read, after an upload that
            // ends with a synchronization.
            // SAFETY: before any buffer or stream exists.
            unsafe { ctx.disable_event_tracking() };
            let name = ctx.name().map_err(|e| at(&e, "reading the name"))?;
            let cc = ctx
                .compute_capability()
                .map_err(|e| at(&e, "reading the compute capability"))?;
            let total = ctx
                .total_mem()
                .map_err(|e| at(&e, "reading the memory size"))?;
            Ok((ctx, name, cc, total))
        })?;
        let cubin = compiled(head_dim, cc)
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

    /// An error of `what` on this device.
    fn err(&self, what: &str, e: impl std::fmt::Debug) -> Error {
        Error::Device(format!(
            "cuda:{} ({}): {what} failed: {e:?}",
            self.ordinal, self.name
        ))
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

/// A device buffer: 32-bit elements (f32, u32, i32) or 16-bit ones (bf16).
pub enum DevBuf {
    /// f32, u32 or i32 elements.
    W32(CudaSlice<u32>),
    /// bf16 elements.
    W16(CudaSlice<u16>),
}

const NO_CUBLAS: &str = "the cuBLAS library (libcublas.so), which runs the matrix products on the GPU, was not found: install it (`pip install nvidia-cublas` of the driver's CUDA version, or the CUDA toolkit) and put its lib folder on LD_LIBRARY_PATH";

/// The arguments of one `cublasGemmEx` call (column-major, as cuBLAS sees it) for the
/// row-major product `y (m, n) = x (m, k) · w^T` with `w` (n, k) row-major, `x` rows of
/// stride `ldx`, `y` rows of stride `ldy`. A row-major matrix is its transpose in column
/// major, so cuBLAS computes `y^T (n, m) = w (n, k) · x^T (k, m)`: `w` is read transposed
/// from its column-major view (k, n) with leading dimension k, `x^T` as it is with leading
/// dimension `ldx`, and `y^T` written with leading dimension `ldy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmArgs {
    /// Whether cuBLAS transposes A (the weight): always.
    pub trans_a: bool,
    /// Whether cuBLAS transposes B (the activations): never.
    pub trans_b: bool,
    /// cuBLAS m, n, k.
    pub m: usize,
    /// cuBLAS n.
    pub n: usize,
    /// cuBLAS k.
    pub k: usize,
    /// Leading dimensions of A, B, C.
    pub lda: usize,
    /// B's.
    pub ldb: usize,
    /// C's.
    pub ldc: usize,
}

/// See [`GemmArgs`].
pub fn gemm_args(m: usize, n: usize, k: usize, ldx: usize, ldy: usize) -> GemmArgs {
    GemmArgs {
        trans_a: true,
        trans_b: false,
        m: n,
        n: m,
        k,
        lda: k,
        ldb: ldx,
        ldc: ldy,
    }
}

/// A [`Backend`] on one GPU: one stream and one cuBLAS handle, so one call at a time; a
/// model keeps one per concurrent call.
pub struct CudaBackend {
    dev: Arc<CudaDevice>,
    stream: Arc<CudaStream>,
    blas: CudaBlas,
}

impl CudaBackend {
    /// A new stream and cuBLAS handle on `dev`.
    pub fn new(dev: Arc<CudaDevice>) -> Result<Self> {
        // SAFETY: only tries to dlopen the library.
        let present =
            catch_unwind(|| unsafe { cudarc::cublas::sys::is_culib_present() }).unwrap_or(false);
        if !present {
            return Err(Error::Device(format!("cuda:{}: {NO_CUBLAS}", dev.ordinal)));
        }
        guarded(
            &format!(
                "creating a stream and a cuBLAS handle on cuda:{}",
                dev.ordinal
            ),
            || {
                let stream = dev
                    .ctx
                    .new_stream()
                    .map_err(|e| dev.err("creating a stream", e))?;
                let blas = CudaBlas::new(stream.clone())
                    .map_err(|e| dev.err("creating a cuBLAS handle", e))?;
                Ok(CudaBackend { dev, stream, blas })
            },
        )
    }

    /// The device.
    pub fn device(&self) -> &Arc<CudaDevice> {
        &self.dev
    }

    /// The device address of element `off` of `b`.
    fn ptr(&self, b: &DevBuf, off: usize) -> u64 {
        // The context tracks no events (CudaDevice::open): the guard does nothing.
        match b {
            DevBuf::W32(s) => s.device_ptr(&self.stream).0 + 4 * off as u64,
            DevBuf::W16(s) => s.device_ptr(&self.stream).0 + 2 * off as u64,
        }
    }

    /// The 32-bit words of `b` (f32 bits, u32, i32), waiting for queued work.
    pub fn download_u32(&self, b: &DevBuf) -> Result<Vec<u32>> {
        match b {
            DevBuf::W32(s) => self.download(s),
            DevBuf::W16(_) => Err(Error::Device(
                "download_u32 of a 16-bit buffer (a bug)".into(),
            )),
        }
    }

    /// The 16-bit words of `b`, waiting for queued work.
    pub fn download_u16(&self, b: &DevBuf) -> Result<Vec<u16>> {
        match b {
            DevBuf::W16(s) => self.download(s),
            DevBuf::W32(_) => Err(Error::Device(
                "download_u16 of a 32-bit buffer (a bug)".into(),
            )),
        }
    }

    fn download<T: cudarc::driver::DeviceRepr + Default + Clone>(
        &self,
        s: &CudaSlice<T>,
    ) -> Result<Vec<T>> {
        guarded("copying from the GPU", || {
            let mut host = vec![T::default(); s.len()];
            self.stream
                .memcpy_dtoh(s, &mut host)
                .map_err(|e| self.dev.err("copying from the GPU", e))?;
            self.stream
                .synchronize()
                .map_err(|e| self.dev.err("waiting for the GPU", e))?;
            Ok(host)
        })
    }

    fn upload<T: cudarc::driver::DeviceRepr>(&self, v: &[T]) -> Result<CudaSlice<T>> {
        guarded("copying to the GPU", || {
            self.stream.clone_htod(v).map_err(|e| {
                self.dev.err(
                    &format!("copying {} bytes to the GPU", std::mem::size_of_val(v)),
                    e,
                )
            })
        })
    }
}

impl Backend for CudaBackend {
    type Buf = DevBuf;
    fn upload_f32(&self, v: &[f32]) -> Result<DevBuf> {
        let bits: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
        self.upload(&bits).map(DevBuf::W32)
    }
    fn upload_u32(&self, v: &[u32]) -> Result<DevBuf> {
        self.upload(v).map(DevBuf::W32)
    }
    fn upload_u16(&self, v: &[u16]) -> Result<DevBuf> {
        self.upload(v).map(DevBuf::W16)
    }
    fn zeros_f32(&self, n: usize) -> Result<DevBuf> {
        guarded("allocating GPU memory", || {
            self.stream
                .alloc_zeros::<u32>(n.max(1))
                .map(DevBuf::W32)
                .map_err(|e| {
                    self.dev
                        .err(&format!("allocating {:.1} MB", (4 * n) as f64 / 1e6), e)
                })
        })
    }
    fn zeros_u16(&self, n: usize) -> Result<DevBuf> {
        guarded("allocating GPU memory", || {
            self.stream
                .alloc_zeros::<u16>(n.max(1))
                .map(DevBuf::W16)
                .map_err(|e| {
                    self.dev
                        .err(&format!("allocating {:.1} MB", (2 * n) as f64 / 1e6), e)
                })
        })
    }
    fn download_f32(&self, b: &DevBuf, n: usize) -> Result<Vec<f32>> {
        let DevBuf::W32(s) = b else {
            return Err(Error::Device(
                "download_f32 of a 16-bit buffer (a bug)".into(),
            ));
        };
        guarded("copying from the GPU", || {
            let mut host = vec![0u32; n];
            self.stream
                .memcpy_dtoh(&s.slice(..n), &mut host)
                .map_err(|e| self.dev.err("copying results from the GPU", e))?;
            self.stream
                .synchronize()
                .map_err(|e| self.dev.err("waiting for the GPU", e))?;
            Ok(host.into_iter().map(f32::from_bits).collect())
        })
    }
    fn synchronize(&self) -> Result<()> {
        guarded("waiting for the GPU", || {
            self.stream
                .synchronize()
                .map_err(|e| self.dev.err("waiting for the GPU", e))
        })
    }
    fn launch(
        &self,
        name: &'static str,
        grid: [u32; 3],
        block: [u32; 3],
        args: &[Arg<'_, DevBuf>],
    ) -> Result<()> {
        LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let f = self
            .dev
            .function(name)
            .ok_or_else(|| Error::Device(format!("kernel {name} is not loaded (a bug)")))?;
        /// A kernel parameter's value, kept alive until the launch.
        enum Val {
            P(u64),
            I(i32),
            U(u32),
            F(f32),
            L(i64),
        }
        let vals: Vec<Val> = args
            .iter()
            .map(|a| match a {
                Arg::Buf(b, off) => Val::P(self.ptr(b, *off)),
                Arg::Null => Val::P(0),
                Arg::I32(v) => Val::I(*v),
                Arg::U32(v) => Val::U(*v),
                Arg::F32(v) => Val::F(*v),
                Arg::I64(v) => Val::L(*v),
            })
            .collect();
        guarded(&format!("launching {name}"), || {
            let mut b = self.stream.launch_builder(f);
            for v in &vals {
                match v {
                    Val::P(p) => b.arg(p),
                    Val::I(i) => b.arg(i),
                    Val::U(u) => b.arg(u),
                    Val::F(x) => b.arg(x),
                    Val::L(l) => b.arg(l),
                };
            }
            let cfg = LaunchConfig {
                grid_dim: (grid[0], grid[1], grid[2]),
                block_dim: (block[0], block[1], block[2]),
                shared_mem_bytes: 0,
            };
            // SAFETY: the arguments match the kernel's parameters (engine/gpu.rs, checked on
            // the CPU emulation of the same source); the pointers are live device buffers.
            unsafe { b.launch(cfg) }
                .map(|_| ())
                .map_err(|e| self.dev.err(&format!("launching kernel {name}"), e))
        })
    }
    fn gemm(
        &self,
        elem: Elem,
        y: Mat<'_, DevBuf>,
        x: Mat<'_, DevBuf>,
        w: &DevBuf,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        use cudarc::cublas::sys;
        LAUNCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let g = gemm_args(m, n, k, x.ld, y.ld);
        let int = |v: usize| {
            i32::try_from(v).map_err(|_| {
                Error::Input(format!(
                    "a product dimension {v} exceeds cuBLAS's 32-bit sizes: lower max_rows"
                ))
            })
        };
        let (dtype, compute) = match elem {
            // PEDANTIC: f32 products never use TF32 (whatever NVIDIA_TF32_OVERRIDE says).
            Elem::F32 => (
                sys::cudaDataType_t::CUDA_R_32F,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F_PEDANTIC,
            ),
            Elem::Bf16 => (
                sys::cudaDataType_t::CUDA_R_16BF,
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
            ),
        };
        let op = |t: bool| {
            if t {
                sys::cublasOperation_t::CUBLAS_OP_T
            } else {
                sys::cublasOperation_t::CUBLAS_OP_N
            }
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (pa, pb, pc) = (
            self.ptr(w, 0),
            self.ptr(x.buf, x.offset),
            self.ptr(y.buf, y.offset),
        );
        let dims = [
            int(g.m)?,
            int(g.n)?,
            int(g.k)?,
            int(g.lda)?,
            int(g.ldb)?,
            int(g.ldc)?,
        ];
        guarded("a cuBLAS product", || {
            // cuBLAS works in the calling thread's current context (calls come from any thread).
            self.dev
                .ctx
                .bind_to_thread()
                .map_err(|e| self.dev.err("binding the context", e))?;
            // SAFETY: live device buffers of the sizes the dimensions describe (engine/gpu.rs),
            // host scalars alive during the call, a handle bound to this stream.
            let status = unsafe {
                sys::cublasGemmEx(
                    *self.blas.handle(),
                    op(g.trans_a),
                    op(g.trans_b),
                    dims[0],
                    dims[1],
                    dims[2],
                    (&alpha as *const f32).cast(),
                    pa as *const std::ffi::c_void,
                    dtype,
                    dims[3],
                    pb as *const std::ffi::c_void,
                    dtype,
                    dims[4],
                    (&beta as *const f32).cast(),
                    pc as *mut std::ffi::c_void,
                    sys::cudaDataType_t::CUDA_R_32F,
                    dims[5],
                    compute,
                    sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            };
            if status != sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
                return Err(Error::Device(format!(
                    "cuda:{}: cuBLAS product ({m} x {n} x {k}, {elem:?}) failed: {status:?}",
                    self.dev.ordinal
                )));
            }
            Ok(())
        })
    }
}

/// A model's weights on a GPU, with the streams of its calls.
pub struct GpuModel {
    dev: Arc<CudaDevice>,
    weights: DevWeights<DevBuf>,
    /// Idle backends (a stream and a cuBLAS handle each), one per concurrent call at most.
    lanes: std::sync::Mutex<Vec<CudaBackend>>,
}

impl GpuModel {
    /// Opens GPU `ordinal`, compiles the kernels for the model and uploads its weights in
    /// `elem`, after checking that the weights and one chunk of `max_rows` rows fit in the
    /// GPU's free memory.
    pub fn load(
        files: &ModelFiles,
        ordinal: usize,
        elem: Elem,
        max_rows: usize,
    ) -> Result<GpuModel> {
        let cfg = &files.config;
        // Every message names the device asked for.
        let named = |e: Error| match e {
            Error::Device(m) if !m.starts_with(&format!("cuda:{ordinal}")) => {
                Error::Device(format!("cuda:{ordinal}: {m}"))
            }
            other => other,
        };
        let dev = Arc::new(CudaDevice::open(ordinal, cfg.head_dim()).map_err(named)?);
        let weights = upload_bytes(&files.weights, elem);
        let (d, f) = (cfg.d_model, cfg.d_ffn);
        // One chunk's buffers: the residual streams and stage A's copies, attention's q|k|v
        // and outputs, the feed-forward's gate|up and products (f32), bf16 operand copies.
        let chunk = max_rows.saturating_mul(4 * (12 * d + 5 * f));
        dev.check_free_memory(
            weights.saturating_add(chunk),
            "the model's weights and one chunk of max_rows rows",
        )?;
        let lane = CudaBackend::new(dev.clone())?;
        let weights = upload(&lane, &files.weights, elem)?;
        Ok(GpuModel {
            dev,
            weights,
            lanes: std::sync::Mutex::new(vec![lane]),
        })
    }

    /// The GPU.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Logits of `ids` under the MC samples `samples` (see [`GpuForward::run`]), on an idle
    /// stream of this model (a new one when every stream is busy).
    pub fn run(
        &self,
        cfg: &Config,
        ids: &[Vec<u32>],
        samples: std::ops::Range<u32>,
        dropout: Option<Dropout>,
        max_rows: usize,
        stop: &Stop,
    ) -> Result<Vec<f32>> {
        let idle = self.lanes.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let lane = match idle {
            Some(l) => l,
            None => CudaBackend::new(self.dev.clone())?,
        };
        let fw = GpuForward {
            g: &lane,
            cfg,
            w: &self.weights,
            max_rows,
        };
        let r = fw.run(ids, samples, dropout, stop);
        // A stream that failed may hold an error state: it is not reused.
        if r.is_ok() || matches!(r, Err(Error::Cancelled(_))) {
            // A cancelled call may leave work queued: wait for it before reuse.
            if lane.synchronize().is_ok() {
                self.lanes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(lane);
            }
        }
        r
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

    /// cuBLAS's column-major GEMM from its definition: C = op(A) op(B), C (m, n) with
    /// leading dimension ldc, A (m, k) after op, B (k, n) after op.
    #[allow(clippy::too_many_arguments)]
    fn blas_reference(g: &GemmArgs, a: &[f32], b: &[f32], c: &mut [f32]) {
        for j in 0..g.n {
            for i in 0..g.m {
                let mut s = 0.0f64;
                for p in 0..g.k {
                    let av = if g.trans_a {
                        a[p + i * g.lda]
                    } else {
                        a[i + p * g.lda]
                    };
                    let bv = if g.trans_b {
                        b[j + p * g.ldb]
                    } else {
                        b[p + j * g.ldb]
                    };
                    s += av as f64 * bv as f64;
                }
                c[i + j * g.ldc] = s as f32;
            }
        }
    }

    /// The row-major product the forward asks for, through the arguments given to cuBLAS,
    /// on strided rows (q|k|v-like strides) and odd sizes.
    #[test]
    fn gemm_arguments_give_the_row_major_product() {
        for (m, n, k, ldx, ldy) in [
            (1, 1, 1, 1, 1),
            (3, 5, 7, 7, 5),
            (4, 6, 3, 9, 11),
            (17, 2, 33, 40, 2),
        ] {
            let x: Vec<f32> = (0..m * ldx).map(|i| (i % 13) as f32 - 6.0).collect();
            let w: Vec<f32> = (0..n * k).map(|i| (i % 7) as f32 * 0.5 - 1.0).collect();
            let g = gemm_args(m, n, k, ldx, ldy);
            let mut y = vec![f32::NAN; m * ldy];
            blas_reference(&g, &w, &x, &mut y);
            for i in 0..m {
                for j in 0..n {
                    let want: f32 = (0..k).map(|p| x[i * ldx + p] * w[j * k + p]).sum();
                    assert_eq!(y[i * ldy + j], want, "m={m} n={n} k={k}: y[{i}][{j}]");
                }
            }
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
