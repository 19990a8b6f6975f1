//! The sample kernel of one affine layer, K = x̃ᵀx̃ with x̃ = [x; 1] (x alone for a map without
//! bias): ⟨θ̄_c, θ̄_c'⟩ of the layer's parameters factors into (ū_c·ū_c') K[c, c'], so the
//! matrix-free products ([`super::structured`]) and the preconditioner ([`super::precond`]) work
//! with K instead of per-sample weight cotangents. Kept whole (n × n) or, when x̃ is much
//! shorter than n, as x̃ itself.

use crate::batch::{par, Batch};
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// K = x̃ᵀx̃ of one affine layer's input, whole or as its low-rank factor x̃.
pub(crate) enum Kernel {
    Full(Mat<f64>),
    LowRank(Mat<f64>),
}

impl Kernel {
    /// The kernel of input x; `bias` adds the row of ones.
    pub(crate) fn new(x: &Batch, bias: bool) -> Self {
        let (d, n) = (x.features(), x.n());
        let rows = d + bias as usize;
        let mut xt = Mat::<f64>::zeros(rows, n);
        for i in 0..n {
            for (f, &v) in x.col(i).iter().enumerate() {
                xt[(f, i)] = v;
            }
            if bias {
                xt[(d, i)] = 1.0;
            }
        }
        if 2 * rows < n {
            Kernel::LowRank(xt)
        } else {
            let mut k = Mat::<f64>::zeros(n, n);
            matmul(
                k.as_mut(),
                Accum::Replace,
                xt.transpose(),
                xt.as_ref(),
                1.0,
                par(),
            );
            Kernel::Full(k)
        }
    }
    /// The n × n kernel (formed on demand for the low-rank form).
    pub(crate) fn full(&self) -> Mat<f64> {
        match self {
            Kernel::Full(k) => k.clone(),
            Kernel::LowRank(xt) => xt.transpose() * xt,
        }
    }
    /// z = u K for u (rows × n).
    pub(crate) fn apply(&self, u: MatRef<'_, f64>, z: faer::MatMut<'_, f64>) {
        match self {
            Kernel::Full(k) => matmul(z, Accum::Replace, u, k.as_ref(), 1.0, par()),
            Kernel::LowRank(xt) => {
                let mut t = Mat::<f64>::zeros(u.nrows(), xt.nrows());
                matmul(t.as_mut(), Accum::Replace, u, xt.transpose(), 1.0, par());
                matmul(z, Accum::Replace, t.as_ref(), xt.as_ref(), 1.0, par());
            }
        }
    }
    pub(crate) fn bytes(&self) -> u64 {
        let (r, c) = match self {
            Kernel::Full(k) => (k.nrows(), k.ncols()),
            Kernel::LowRank(xt) => (xt.nrows(), xt.ncols()),
        };
        (r * c * 8) as u64
    }
}
