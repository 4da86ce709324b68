//! Pure compute kernels of emcoder: functions over slices, outputs first, shapes last.
//! No allocation on the hot paths and no globals but one: the CPU's capabilities, detected
//! once ([`cpu::caps`]). Every kernel family takes an [`cpu::Isa`] level and picks its
//! variant from it; each has a scalar `reference_*` (or definition test) next to it,
//! checked on odd sizes at every level this CPU runs.

pub mod activation;
pub mod attention;
pub mod cpu;
pub mod gemm_bf16;
pub mod gemm_f32;
pub mod gemm_i8;
pub mod matmul;
pub mod norm;
mod out_ptr;
pub mod packing;
pub mod philox;
pub mod rope;
pub(crate) mod simd;
pub mod variants;

pub use cpu::{caps, Isa};
pub use variants::variants;
