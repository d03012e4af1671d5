//! A weight matrix of the forward pass and the products of rows by it: our
//! own kernels ([`super::kernels`]) for Q4_1, Q8_0, Q5_0, Q4_K and Q6_K,
//! candle's quantized matmul for every other type.

use super::kernels::q4_1::Q4_1Matrix;
use super::kernels::q4_k::Q4KMatrix;
use super::kernels::q6_k::Q6KMatrix;
use super::kernels::q8_0::Q8_0Matrix;
use super::kernels::q8_k::Q8KGroup;
use super::kernels::{Activations, Group, Isa, Product, matmul_many};
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor};

/// A weight matrix (`n` outputs of `k` inputs): ours when it is Q4_1, Q8_0,
/// Q5_0 (widened to Q8_0's bytes), Q4_K or Q6_K, candle's otherwise.
pub(crate) struct Linear {
    /// Outputs.
    pub(crate) n: usize,
    /// Inputs.
    pub(crate) k: usize,
    kernel: Kernel,
}

enum Kernel {
    /// Against activations quantized to Q8_1.
    Ours(Box<dyn Product>),
    /// Against activations quantized to Q8_K (the k-quants).
    OursK(Box<dyn Product<Q8KGroup>>),
    Candle(QMatMul),
}

impl Linear {
    pub(crate) fn new(t: QTensor) -> Result<Self> {
        let msg = |e: &dyn std::fmt::Display| candle_core::Error::Msg(e.to_string());
        let &[n, k] = t.shape().dims() else {
            return Err(msg(&format!(
                "a weight matrix of shape {:?}",
                t.shape().dims()
            )));
        };
        let kernel = match t.dtype() {
            GgmlDType::Q4_1 => Kernel::Ours(Box::new(
                Q4_1Matrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?,
            )),
            GgmlDType::Q8_0 => Kernel::Ours(Box::new(
                Q8_0Matrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?,
            )),
            GgmlDType::Q5_0 => Kernel::Ours(Box::new(
                Q8_0Matrix::from_q5_0_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?,
            )),
            GgmlDType::Q4K => Kernel::OursK(Box::new(
                Q4KMatrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?,
            )),
            GgmlDType::Q6K => Kernel::OursK(Box::new(
                Q6KMatrix::from_blocks(n, k, &t.data()?).map_err(|e| msg(&e))?,
            )),
            _ => Kernel::Candle(QMatMul::from_qtensor(t)?),
        };
        Ok(Linear { n, k, kernel })
    }
}

/// `x` (rows of `k`) through several weights that read it, each result
/// `rows × n`; for ours, `x` is quantized once for all of them.
pub(crate) fn forward_all<const N: usize>(
    weights: [&Linear; N],
    x: &[f32],
) -> Result<[Vec<f32>; N]> {
    let k = weights.first().map_or(0, |w| w.k);
    if k == 0 || !x.len().is_multiple_of(k) || weights.iter().any(|w| w.k != k) {
        return Err(candle_core::Error::Msg(format!(
            "{} input values for weights of {:?} columns",
            x.len(),
            weights.map(|w| w.k)
        )));
    }
    let rows = x.len() / k;
    let mut out: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    // Ours in one call of the kernels per kind of activations (one
    // quantization of `x`, one parallel region); candle's one by one, from
    // one copy of `x`.
    ours_into(&mut out, &weights, x, k, |w| match &w.kernel {
        Kernel::Ours(m) => Some(m.as_ref()),
        _ => None,
    });
    ours_into(&mut out, &weights, x, k, |w| match &w.kernel {
        Kernel::OursK(m) => Some(m.as_ref()),
        _ => None,
    });
    let mut tensor = None;
    for (w, y) in weights.iter().zip(out.iter_mut()) {
        if let Kernel::Candle(q) = &w.kernel {
            let t = match &tensor {
                Some(t) => t,
                None => tensor.insert(Tensor::from_slice(x, (rows, k), &Device::Cpu)?),
            };
            *y = q
                .forward(t)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
        }
    }
    Ok(out)
}

/// The products of `x` with those of `weights` that `kind` takes (ours, of
/// one kind of activations), into their places in `out`.
fn ours_into<'w, G: Group + 'w, const N: usize>(
    out: &mut [Vec<f32>; N],
    weights: &[&'w Linear; N],
    x: &[f32],
    k: usize,
    kind: impl Fn(&'w Linear) -> Option<&'w dyn Product<G>>,
) {
    let ours: Vec<(usize, &dyn Product<G>)> = weights
        .iter()
        .enumerate()
        .filter_map(|(i, w)| kind(w).map(|m| (i, m)))
        .collect();
    if ours.is_empty() {
        return;
    }
    let acts = Activations::<G>::quantize(x, k);
    let matrices: Vec<&dyn Product<G>> = ours.iter().map(|(_, m)| *m).collect();
    for ((i, _), y) in ours.iter().zip(matmul_many(Isa::best(), &matrices, &acts)) {
        out[*i] = y;
    }
}

/// Each row of `x` (rows of `widths.iter().sum()`) cut into parts of
/// `widths`: part `i` of every row, as rows of `widths[i]`.
pub(crate) fn split_rows<const N: usize>(x: &[f32], widths: [usize; N]) -> [Vec<f32>; N] {
    let width: usize = widths.iter().sum();
    let rows = x.len().checked_div(width).unwrap_or(0);
    let mut parts = widths.map(|w| Vec::with_capacity(rows * w));
    for row in x.chunks_exact(width.max(1)) {
        let mut at = 0;
        for (part, w) in parts.iter_mut().zip(widths) {
            part.extend_from_slice(&row[at..at + w]);
            at += w;
        }
    }
    parts
}
