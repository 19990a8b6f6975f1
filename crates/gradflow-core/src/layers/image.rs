//! Shared image-shape helpers for the image layers (convolution, depthwise convolution, pooling,
//! upsampling).
//!
//! A sample's features are an image C×H×W flattened in PyTorch order (c, h, w) row-major — index
//! c·H·W + h·W + w — so a batch column is exactly one `torch.Tensor` of shape [C, H, W] and
//! flattening before a dense head is the identity (no layer needed). [`ImageShape`] names that
//! layout; [`window_output`]/[`output_side`] compute PyTorch's output size of a sliding window
//! (floor((H + 2p − k)/s) + 1); [`per_column_gram`] is the NTK helper shared by the parametrised
//! image layers, which do not mix samples and keep no tape, so each column's parameter cotangent
//! can be computed from its own sample alone.

use crate::batch::{par, Batch};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef};
use rayon::prelude::*;

/// The shape C×H×W of one image sample; its features are laid out c·H·W + h·W + w.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    pub c: usize,
    pub h: usize,
    pub w: usize,
}

impl ImageShape {
    pub fn new(c: usize, h: usize, w: usize) -> Self {
        Self { c, h, w }
    }
    /// Features per sample, C·H·W (the `in_dim`/`out_dim` of a layer on this shape).
    pub fn len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Pixels per channel, H·W.
    pub fn plane(&self) -> usize {
        self.h * self.w
    }
    /// Flat index of (c, h, w).
    pub fn index(&self, c: usize, h: usize, w: usize) -> usize {
        debug_assert!(c < self.c && h < self.h && w < self.w);
        (c * self.h + h) * self.w + w
    }
    /// The shape as PyTorch writes it, [C, H, W].
    pub fn dims(&self) -> [usize; 3] {
        [self.c, self.h, self.w]
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}×{}×{}", self.c, self.h, self.w)
    }
}

/// Output length of a window of size `k` sliding with `stride` over `size` positions padded by
/// `padding` zeros on both sides: floor((size + 2p − k)/stride) + 1, or None when the window
/// does not fit once (or `k`/`stride` is zero).
pub fn window_output(size: usize, k: usize, stride: usize, padding: usize) -> Option<usize> {
    if k == 0 || stride == 0 || size == 0 || size + 2 * padding < k {
        return None;
    }
    Some((size + 2 * padding - k) / stride + 1)
}

/// [`window_output`] that panics with a message naming the layer (`what`) and the axis.
pub fn output_side(
    what: &str,
    axis: &str,
    size: usize,
    k: usize,
    stride: usize,
    padding: usize,
) -> usize {
    assert!(k >= 1, "{what}: kernel {axis} must be at least 1");
    assert!(stride >= 1, "{what}: stride must be at least 1");
    assert!(size >= 1, "{what}: input {axis} must be at least 1");
    window_output(size, k, stride, padding).unwrap_or_else(|| {
        panic!(
            "{what}: input {axis} {size} with padding {padding} is smaller than the kernel \
             ({k}): the output {axis} (H + 2p − k)/s + 1 would be < 1"
        )
    })
}

/// `H×W`, or `KH×KW` — the spatial part of a shape for descriptions.
pub(crate) fn hw(h: usize, w: usize) -> String {
    format!("{h}×{w}")
}

/// `k3` for a square kernel, `k2×3` otherwise.
pub(crate) fn kernel_label(kh: usize, kw: usize) -> String {
    if kh == kw {
        format!("k{kh}")
    } else {
        format!("k{kh}×{kw}")
    }
}

/// The NTK parameter term of a layer that does not mix samples and keeps no tape: column c of
/// `y_bar` (N = x.n()·reps columns) belongs to sample c / reps; `param_cot(x_i, ȳ_c, θ̄_c)` must
/// write (not add) that column's parameter cotangent into the zeroed θ̄_c of length `np`. The
/// per-column cotangents are computed in parallel into P (np × N) and PᵀP is added to `gram`.
/// Costs one single-sample parameter cotangent per column instead of a whole-batch vjp.
pub(crate) fn per_column_gram(
    np: usize,
    x: &Batch,
    y_bar: &Batch,
    reps: usize,
    gram: &mut faer::Mat<f64>,
    param_cot: impl Fn(&[f64], &[f64], &mut [f64]) + Sync,
) {
    let big_n = y_bar.n();
    assert_eq!(
        big_n,
        x.n() * reps,
        "vjp_gram: y_bar must have x.n()·reps columns"
    );
    if np == 0 || big_n == 0 {
        return;
    }
    let mut p = vec![0.0; np * big_n];
    p.par_chunks_mut(np).enumerate().for_each(|(c, g)| {
        param_cot(x.col(c / reps), y_bar.col(c), g);
    });
    let p = MatRef::from_column_major_slice(&p, np, big_n);
    matmul(gram.as_mut(), Accum::Add, p.transpose(), p, 1.0, par());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_pytorch() {
        assert_eq!(window_output(8, 3, 1, 1), Some(8));
        assert_eq!(window_output(7, 3, 2, 1), Some(4));
        assert_eq!(window_output(5, 2, 2, 0), Some(2));
        assert_eq!(window_output(2, 3, 1, 0), None);
        assert_eq!(window_output(2, 3, 1, 1), Some(2));
        assert_eq!(window_output(4, 3, 0, 0), None);
        let s = ImageShape::new(2, 3, 4);
        assert_eq!((s.len(), s.plane(), s.index(1, 2, 3)), (24, 12, 23));
        assert_eq!(s.to_string(), "2×3×4");
    }
}
