//! Where the forward pass runs: the CPU (our kernels, batched) or an
//! NVIDIA GPU through candle's CUDA kernels (a build with the `cuda`
//! feature, `scripts/build-cuda.sh`).
//!
//! On a GPU the model runs candle's quantized llama forward pass, one
//! sequence per pass: our batched forward pass and kernels are CPU code.
//! Under confidential computing every host↔GPU copy goes through encrypted
//! bounce buffers, so the weights are uploaded once, as whole tensors, and
//! each pass copies only token ids in and one row of logits out.

use std::fmt;
use std::str::FromStr;

/// A compute device, as `--device` names it: `cpu` or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ComputeDevice {
    #[default]
    Cpu,
    /// The GPU of this CUDA ordinal.
    Cuda(usize),
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ComputeDevice::Cpu => f.write_str("cpu"),
            ComputeDevice::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl FromStr for ComputeDevice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "cpu" => Ok(ComputeDevice::Cpu),
            _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
                Some(Ok(n)) => Ok(ComputeDevice::Cuda(n)),
                Some(Err(_)) => Err(format!("{s:?}: cuda:N takes a GPU ordinal (cuda:0)")),
                None => Err(format!("{s:?}: expected cpu or cuda:N")),
            },
        }
    }
}

impl ComputeDevice {
    /// Whether this build can run on GPUs at all.
    pub const CUDA_BUILT: bool = cfg!(feature = "cuda");

    /// Whether the device can be used: on a GPU, its CUDA context opens
    /// (checked before anything slow or secret, such as a key release).
    pub fn probe(self) -> Result<(), String> {
        self.open().map(drop)
    }

    /// The candle device, opened (for a GPU: its CUDA context).
    pub(crate) fn open(self) -> Result<candle_core::Device, String> {
        match self {
            ComputeDevice::Cpu => Ok(candle_core::Device::Cpu),
            ComputeDevice::Cuda(n) if Self::CUDA_BUILT => {
                candle_core::Device::new_cuda(n).map_err(|e| format!("cuda:{n}: {e}"))
            }
            ComputeDevice::Cuda(n) => Err(format!(
                "cuda:{n}: this ciel was built without CUDA support (build the CUDA variant with scripts/build-cuda.sh)"
            )),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_as_the_flag_names_them() {
        assert_eq!("cpu".parse(), Ok(ComputeDevice::Cpu));
        assert_eq!("cuda:3".parse(), Ok(ComputeDevice::Cuda(3)));
        assert_eq!(ComputeDevice::Cuda(3).to_string(), "cuda:3");
        for bad in ["gpu", "cuda", "cuda:", "cuda:-1", "CPU", "cuda:x"] {
            assert!(bad.parse::<ComputeDevice>().is_err(), "{bad}");
        }
        if !ComputeDevice::CUDA_BUILT {
            let e = ComputeDevice::Cuda(0).open().unwrap_err();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
