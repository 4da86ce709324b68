//! CPU capabilities and the one dispatch of the kernels.
//!
//! [`caps`] detects, once per process, the architecture, the instruction-set levels this CPU
//! *and* its OS can run, and the one validated override `EMCODER_ISA=<level>`. It is the only
//! place of the project that probes the CPU or reads the environment for kernels: every
//! kernel family (f32, bf16 and int8 products, attention, exp, RMSNorm, SwiGLU, Philox
//! masks, packing) takes an [`Isa`] level as an argument and picks its variant from it
//! ([`crate::variants`] lists them).
//!
//! Levels of one architecture are ordered: each implies the ones below it. x86-64:
//! `generic < avx2 < avx512 < avx512-bf16 < amx`; AArch64: `generic < neon < neon-bf16`.
//! Safe kernel functions check that the level they are given runs here and panic
//! otherwise (a caller bug: the runtime only passes levels from [`CpuCaps::available`]).

use std::sync::OnceLock;

/// An instruction-set level: the set of instructions a kernel may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, any CPU.
    Generic,
    /// x86-64 with AVX2 and FMA (Haswell, Zen 1 and later).
    Avx2,
    /// x86-64 with AVX-512F and BMI2 (plus AVX2/FMA): Skylake-SP, Ice Lake, Zen 4.
    Avx512,
    /// AVX-512 with AVX512_BF16 (`vdpbf16ps`): Cooper Lake, Sapphire Rapids, Zen 4.
    Avx512Bf16,
    /// AMX-BF16 tiles (`tdpbf16ps`) on top of AVX512_BF16: Sapphire Rapids and later.
    Amx,
    /// AArch64 Advanced SIMD (every AArch64 CPU).
    Neon,
    /// AArch64 with FEAT_BF16 (`bfdot`): Neoverse V1/N2, Cortex-A710, Apple M2 and later.
    NeonBf16,
}

impl Isa {
    /// Every level, in order (x86-64 levels, then AArch64 ones).
    pub const ALL: [Isa; 7] = [
        Isa::Generic,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
        Isa::Neon,
        Isa::NeonBf16,
    ];

    /// The name `EMCODER_ISA` and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Generic => "generic",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::NeonBf16 => "neon-bf16",
        }
    }

    /// Parses a level name (case-insensitive; `_` and `-` are the same).
    pub fn parse(s: &str) -> Option<Isa> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        let s = match s.as_str() {
            "avx512bf16" => "avx512-bf16",
            "neonbf16" => "neon-bf16",
            other => other,
        };
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// True when this CPU and OS can run the level.
    pub fn runs_here(self) -> bool {
        caps().available.contains(&self)
    }

    /// Panics with a clear message unless the level runs here (the check of every safe
    /// kernel entry point that takes a level).
    #[track_caller]
    pub fn assert_runs_here(self) {
        assert!(
            self.runs_here(),
            "the {} kernels cannot run on this CPU (it runs: {})",
            self.name(),
            caps().available_names()
        );
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What this process found out about its CPU, once.
#[derive(Clone, Debug)]
pub struct CpuCaps {
    /// `x86_64`, `aarch64`, ...
    pub arch: &'static str,
    /// The CPU's model name (CPUID brand string, or `/proc/cpuinfo`), for logs and benchmarks.
    pub model: String,
    /// Every level this CPU and OS can run, lowest first (always starts with `Generic`).
    pub available: Vec<Isa>,
    /// The best of them.
    pub best: Isa,
    /// What `EMCODER_ISA` asked for, when set and non-empty.
    pub requested: Option<String>,
    /// The level kernels use: `best`, or the valid override. `Err` says why the override
    /// is refused (an unknown name, or a level this CPU cannot run).
    pub selected: Result<Isa, String>,
    /// Integer dot-product instructions, which the levels do not imply.
    pub int8: Int8Features,
    /// `EMCODER_INT8=<kernel>` when set: the int8 kernel to use instead of the level's best
    /// (for measurements and tests; validated by `gemm_i8::Kernel::for_isa`).
    pub int8_requested: Option<String>,
}

/// The integer dot-product instructions of this CPU that the levels do not imply. A level's
/// int8 products use the best of them that the level allows (`gemm_i8::Kernel::for_isa`);
/// integer sums are exact, so every variant gives the same bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Int8Features {
    /// AVX-VNNI (`vpdpbusd` on ymm): Alder Lake, Sapphire Rapids, Zen 5.
    pub avx_vnni: bool,
    /// AVX512_VNNI with AVX512BW (`vpdpbusd` on zmm): Cascade Lake, Ice Lake, Zen 4.
    pub avx512_vnni: bool,
    /// AMX-INT8 tiles (`tdpbssd`), with the AMX level: Sapphire Rapids and later.
    pub amx_int8: bool,
    /// FEAT_DotProd (`sdot`): Cortex-A76/A78, Neoverse N1, Apple M1 and later.
    pub dotprod: bool,
    /// FEAT_I8MM (`smmla`): Cortex-A710, Neoverse V1/N2, Apple M2 and later.
    pub i8mm: bool,
}

impl CpuCaps {
    /// The available levels as a list of names.
    pub fn available_names(&self) -> String {
        let v: Vec<&str> = self.available.iter().map(|i| i.name()).collect();
        v.join(", ")
    }
}

/// The capabilities of this process's CPU, detected on first use.
pub fn caps() -> &'static CpuCaps {
    static CAPS: OnceLock<CpuCaps> = OnceLock::new();
    CAPS.get_or_init(|| {
        let available = detect();
        let requested = std::env::var("EMCODER_ISA")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let best = *available.last().unwrap_or(&Isa::Generic);
        let selected = match &requested {
            None => Ok(best),
            Some(r) => select(r, &available),
        };
        let int8 = detect_int8(&available);
        let int8_requested = std::env::var("EMCODER_INT8")
            .ok()
            .filter(|s| !s.trim().is_empty());
        CpuCaps {
            int8_requested,
            arch: std::env::consts::ARCH,
            model: model_name(),
            int8,
            available,
            best,
            requested,
            selected,
        }
    })
}

/// Validates an override against the available levels.
fn select(requested: &str, available: &[Isa]) -> Result<Isa, String> {
    let names: Vec<&str> = available.iter().map(|i| i.name()).collect();
    match Isa::parse(requested) {
        None => {
            let all: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
            Err(format!(
                "EMCODER_ISA={requested} is not a known level (one of: {}); this CPU runs {}",
                all.join(", "),
                names.join(", ")
            ))
        }
        Some(isa) if !available.contains(&isa) => Err(format!(
            "EMCODER_ISA={requested}: this CPU cannot run the {} kernels (it runs {}); unset it or pick one of those",
            isa.name(),
            names.join(", ")
        )),
        Some(isa) => Ok(isa),
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    // std's detection checks CPUID and that the OS saves the AVX / AVX-512 state (XGETBV).
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        return v;
    }
    v.push(Isa::Avx2);
    if !(is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("bmi2")) {
        return v;
    }
    v.push(Isa::Avx512);
    if !is_x86_feature_detected!("avx512bf16") {
        return v;
    }
    v.push(Isa::Avx512Bf16);
    if amx::cpu_and_os() {
        v.push(Isa::Amx);
    }
    v
}

#[cfg(target_arch = "aarch64")]
fn detect() -> Vec<Isa> {
    let mut v = vec![Isa::Generic];
    if !std::arch::is_aarch64_feature_detected!("neon") {
        return v;
    }
    v.push(Isa::Neon);
    if std::arch::is_aarch64_feature_detected!("bf16") {
        v.push(Isa::NeonBf16);
    }
    v
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> Vec<Isa> {
    vec![Isa::Generic]
}

#[cfg(target_arch = "x86_64")]
fn detect_int8(levels: &[Isa]) -> Int8Features {
    let avx2 = levels.contains(&Isa::Avx2);
    let avx512 = levels.contains(&Isa::Avx512);
    Int8Features {
        avx_vnni: avx2 && is_x86_feature_detected!("avxvnni"),
        avx512_vnni: avx512
            && is_x86_feature_detected!("avx512vnni")
            && is_x86_feature_detected!("avx512bw"),
        amx_int8: levels.contains(&Isa::Amx) && amx::int8(),
        ..Default::default()
    }
}

#[cfg(target_arch = "aarch64")]
fn detect_int8(levels: &[Isa]) -> Int8Features {
    let neon = levels.contains(&Isa::Neon);
    Int8Features {
        dotprod: neon && std::arch::is_aarch64_feature_detected!("dotprod"),
        i8mm: neon && std::arch::is_aarch64_feature_detected!("i8mm"),
        ..Default::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect_int8(_levels: &[Isa]) -> Int8Features {
    Int8Features::default()
}

/// Asks the OS for the AMX tile state, once per process (Linux grants it per process with
/// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`). Call it only when AMX kernels
/// are about to run (a bf16 model at the `amx` level): the permission enlarges every
/// thread's signal frame. Returns whether AMX may be used; false off x86-64 Linux.
pub fn request_amx() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if caps().available.contains(&Isa::Amx) {
            return amx::request_permission();
        }
        false
    })
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use std::arch::x86_64::{__cpuid, __cpuid_count};

    /// CPUID reports AMX-TILE and AMX-BF16 and the OS enabled the tile state in XCR0 (bits
    /// 17 XTILECFG and 18 XTILEDATA, next to the AVX-512 state bits 5-7).
    pub fn cpu_and_os() -> bool {
        // CPUID leaf 0 gives the highest leaf.
        let max_leaf = __cpuid(0).eax;
        if max_leaf < 0xD {
            return false;
        }
        let edx = __cpuid_count(7, 0).edx;
        let tile = edx & (1 << 24) != 0;
        let bf16 = edx & (1 << 22) != 0;
        // Leaf 1, ECX bit 27: OSXSAVE.
        let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
        if !(tile && bf16 && osxsave) {
            return false;
        }
        // SAFETY: OSXSAVE is set, so XGETBV with ECX = 0 is allowed.
        let xcr0 = unsafe { xgetbv0() };
        let needed = (1u64 << 1) | (1 << 2) | (0b111 << 5) | (1 << 17) | (1 << 18);
        xcr0 & needed == needed
    }

    /// CPUID reports AMX-INT8 (leaf 7, EDX bit 25); the tile state is checked by
    /// [`cpu_and_os`].
    pub fn int8() -> bool {
        __cpuid(0).eax >= 7 && __cpuid_count(7, 0).edx & (1 << 25) != 0
    }

    /// XCR0.
    ///
    /// # Safety
    /// CPUID.1:ECX.OSXSAVE is set.
    unsafe fn xgetbv0() -> u64 {
        let (lo, hi): (u32, u32);
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                        options(nomem, nostack, preserves_flags));
        ((hi as u64) << 32) | lo as u64
    }

    /// `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`.
    #[cfg(target_os = "linux")]
    pub fn request_permission() -> bool {
        let ret: i64;
        // SAFETY: the arch_prctl syscall (158) with ARCH_REQ_XCOMP_PERM (0x1023) and
        // XFEATURE_XTILEDATA (18) only changes this process's permitted xsave state.
        unsafe {
            std::arch::asm!("syscall", inlateout("rax") 158i64 => ret, in("rdi") 0x1023i64,
                            in("rsi") 18i64, lateout("rcx") _, lateout("r11") _,
                            options(nostack));
        }
        ret == 0
    }
}

/// The CPU's model name.
fn model_name() -> String {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid;
        let ext = __cpuid(0x8000_0000).eax;
        if ext >= 0x8000_0004 {
            let mut bytes = Vec::with_capacity(48);
            for leaf in 0x8000_0002u32..=0x8000_0004 {
                let r = __cpuid(leaf);
                for w in [r.eax, r.ebx, r.ecx, r.edx] {
                    bytes.extend_from_slice(&w.to_le_bytes());
                }
            }
            let s = String::from_utf8_lossy(&bytes);
            let s = s.trim_matches(char::from(0)).trim();
            if !s.is_empty() {
                // Family and model too: virtual machines often report a generic brand
                // ("AMD EPYC"), and the family/model names the core (25/1: Zen 3).
                let eax = __cpuid(1).eax;
                let base_family = (eax >> 8) & 0xf;
                let family = if base_family == 0xf {
                    base_family + ((eax >> 20) & 0xff)
                } else {
                    base_family
                };
                let model = ((eax >> 4) & 0xf) | (((eax >> 16) & 0xf) << 4);
                return format!("{s} (family {family}, model {model})");
            }
        }
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name") || l.starts_with("Model"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
            assert_eq!(Isa::parse(&isa.name().to_uppercase()), Some(isa));
        }
        assert_eq!(Isa::parse("AVX512_BF16"), Some(Isa::Avx512Bf16));
        assert_eq!(Isa::parse("sse9"), None);
    }

    #[test]
    fn overrides_are_validated() {
        let here = vec![Isa::Generic, Isa::Avx2];
        assert_eq!(select("avx2", &here), Ok(Isa::Avx2));
        assert_eq!(select("GENERIC", &here), Ok(Isa::Generic));
        let e = select("amx", &here).unwrap_err();
        assert!(
            e.contains("cannot run the amx") && e.contains("generic, avx2"),
            "{e}"
        );
        let e = select("fast", &here).unwrap_err();
        assert!(e.contains("not a known level"), "{e}");
    }

    #[test]
    fn detection_is_consistent() {
        let c = caps();
        assert_eq!(c.available[0], Isa::Generic);
        assert!(c.available.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(c.best, *c.available.last().unwrap());
        eprintln!(
            "{} ({}): levels {}; selected {:?}",
            c.model,
            c.arch,
            c.available_names(),
            c.selected
        );
        if cfg!(target_arch = "aarch64") {
            assert!(c.available.contains(&Isa::Neon));
        }
    }
}
