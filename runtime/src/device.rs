//! Where a model runs: the CPU, or an NVIDIA GPU through the `cuda` feature.
//!
//! The names users type (`cpu`, `cuda`, `cuda:N`) are parsed here for every front end, with
//! or without the feature, so that a build without CUDA answers a request for it with what
//! to do instead of "unknown device".

use crate::error::{Error, Result};

/// A compute device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Device {
    /// The CPU engine (SIMD kernels, the model's thread pool).
    #[default]
    Cpu,
    /// NVIDIA GPU number N (CUDA device ordinal, as `nvidia-smi` lists them).
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Input(format!(
                "unknown device `{s}`: use cpu, cuda (GPU 0) or cuda:N (GPU number N)"
            ))
        };
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            _ => {
                let n = s.strip_prefix("cuda:").ok_or_else(bad)?;
                // Digits only: no sign, no spaces, no "0x".
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                n.parse().map(Device::Cuda).map_err(|_| bad())
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build has the CUDA backend (the `cuda` cargo feature).
pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_print_back() {
        for (s, d) in [
            ("cpu", Device::Cpu),
            ("cuda", Device::Cuda(0)),
            ("cuda:0", Device::Cuda(0)),
            ("cuda:3", Device::Cuda(3)),
        ] {
            assert_eq!(s.parse::<Device>().unwrap(), d, "{s}");
        }
        assert_eq!(Device::Cuda(2).to_string(), "cuda:2");
        assert_eq!(Device::Cpu.to_string(), "cpu");
        for bad in [
            "",
            "gpu",
            "CUDA",
            "cuda:",
            "cuda:-1",
            "cuda:+1",
            "cuda: 1",
            "cuda:1x",
            "cuda:0x1",
            "cuda:99999999999999999999999",
            "cpu:0",
        ] {
            let e = bad.parse::<Device>().unwrap_err().to_string();
            assert!(e.contains("use cpu, cuda"), "{bad:?}: {e}");
        }
    }
}
