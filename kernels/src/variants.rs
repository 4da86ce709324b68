//! Which variant of each kernel family a level runs (`emcoder cpu`, the model's log).

use crate::cpu::Isa;

/// The variant each kernel family runs at level `isa` on this CPU: `(family, variant)`.
pub fn variants(isa: Isa) -> Vec<(&'static str, &'static str)> {
    use Isa::*;
    let f32p = match isa {
        Generic => "generic 4x4 tiles (f32::mul_add)",
        Avx2 => "avx2 6x16 micro-kernel",
        Avx512 | Avx512Bf16 | Amx => "avx512 14x32 asm micro-kernel (10x32 when k % 1024 == 0)",
        Neon | NeonBf16 => "neon 6x12 micro-kernel (fmla by element)",
    };
    let bf16p = match isa {
        Generic => "generic (bf16 operands, f32 sums)",
        Avx2 => "avx2: bf16 weights widened in the micro-kernel, f32 fma",
        Avx512 => "avx512: bf16 weights widened in the micro-kernel, f32 fma",
        Avx512Bf16 => "avx512-bf16 vdpbf16ps",
        Amx => "amx tdpbf16ps tiles",
        Neon => "neon: bf16 weights widened in the micro-kernel, f32 fma",
        NeonBf16 => "neon-bf16 bfdot",
    };
    let vec = match isa {
        Generic => "generic",
        Avx2 => "avx2 (8 lanes)",
        Avx512 | Avx512Bf16 | Amx => "avx512 (16 lanes)",
        Neon | NeonBf16 => "neon (4 lanes)",
    };
    let philox = match isa {
        Generic => "generic (scalar Philox4x32-10)",
        Avx2 => "avx2 (8 counters per step)",
        Avx512 | Avx512Bf16 | Amx => "avx512 (16 counters per step)",
        Neon | NeonBf16 => "neon (4 counters per step)",
    };
    vec![
        ("f32 products", f32p),
        ("bf16 products", bf16p),
        ("int8 products", crate::gemm_i8::Kernel::for_isa(isa).name()),
        ("attention (tiled, online softmax)", vec),
        ("exp (softmax, SiLU)", vec),
        ("rmsnorm", vec),
        ("swiglu", vec),
        ("philox masks", philox),
        ("packing", vec),
    ]
}
