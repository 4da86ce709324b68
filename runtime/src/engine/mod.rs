//! The runtime layer: packed batches, the forward pass, the MC sampler's statistics.

pub mod arena;
pub mod batch;
pub mod forward;
pub mod gpu;
pub mod stats;
pub mod stop;
pub mod workers;
