//! Pure compute kernels of emcoder: functions over slices, outputs first, shapes last.
//! No allocation, no globals. Each kernel has a scalar `reference_*` (or definition test)
//! next to it, checked on odd sizes.

pub mod activation;
pub mod attention;
pub mod gemm_bf16;
pub mod gemm_f32;
pub mod matmul;
pub mod norm;
pub mod philox;
pub mod rope;
