//! Step 0 of the certificate ([`super`]): J̃ scaled by a power of two to max|entry| ∈ [½, 1),
//! column-major with rows padded to a multiple of the double-double kernel's lanes.

use super::rounding::*;
use super::LANES;
use faer::MatRef;

pub(super) struct Scaled {
    pub(super) n: usize,
    pub(super) p: usize,
    pub(super) n_pad: usize,
    /// Column k at k·n_pad; rows n..n_pad are zero.
    pub(super) data: Vec<f64>,
    /// The scaled J̃ is 2^(−exp)·J̃ (up to `rounding`).
    pub(super) exp: i32,
    /// An upper bound on ‖scaled J̃‖_F².
    pub(super) frob2: f64,
    /// An upper bound on ‖scaled J̃ − 2^(−exp)·J̃‖_F (entries that landed in the subnormal range).
    pub(super) rounding: f64,
}

impl Scaled {
    pub(super) fn new(j: MatRef<'_, f64>) -> Result<Self, String> {
        let (n, p) = (j.nrows(), j.ncols());
        let mut max: f64 = 0.0;
        for k in 0..p {
            for i in 0..n {
                let x = j[(i, k)];
                if !x.is_finite() {
                    return Err(format!(
                        "J̃ has a non-finite entry ({x}) at ({i}, {k}): nothing can be proven"
                    ));
                }
                max = max.max(x.abs());
            }
        }
        if max == 0.0 {
            return Err("J̃ is zero, so J̃ J̃ᵀ is singular".into());
        }
        let exp = binary_exponent(max);
        let n_pad = n.div_ceil(LANES) * LANES;
        let mut data = vec![0.0; n_pad * p];
        let mut inexact = 0usize;
        let mut frob2 = 0.0;
        for k in 0..p {
            for i in 0..n {
                let x = j[(i, k)];
                let y = ldexp(x, -exp);
                if ldexp(y, exp) != x {
                    inexact += 1;
                }
                data[k * n_pad + i] = y;
                frob2 = add_up(frob2, mul_up(y, y));
            }
        }
        let rounding = if inexact == 0 {
            0.0
        } else {
            mul_up((inexact as f64).sqrt().next_up(), pow2(-1074))
        };
        Ok(Self {
            n,
            p,
            n_pad,
            data,
            exp,
            frob2,
            rounding,
        })
    }

    pub(super) fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice_with_stride(&self.data, self.n, self.p, self.n_pad)
    }

    /// A λ-like quantity (units of J̃²) in scaled units; only used as a shift, so its rounding
    /// does not matter.
    pub(super) fn down_to_scale(&self, x: f64) -> f64 {
        ldexp(x, -2 * self.exp)
    }

    /// A scaled λ-like quantity in original units, for messages.
    pub(super) fn g_to_original(&self, x: f64) -> f64 {
        ldexp(x, 2 * self.exp)
    }

    pub(super) fn sigma_to_original(&self, x: f64) -> f64 {
        ldexp(x, self.exp)
    }

    /// An upper bound on ‖J − scaled J̃‖_F in scaled units, from one on ‖J − J̃‖_F.
    pub(super) fn jacobian_error_to_scale(&self, e: f64) -> f64 {
        if e == 0.0 && self.rounding == 0.0 {
            return 0.0;
        }
        add_up(ldexp(e, -self.exp).next_up(), self.rounding)
    }

    /// A proven scaled lower bound in original units, rounded down; None if that underflows.
    pub(super) fn bound_to_original(&self, s: f64) -> Option<f64> {
        let x = ldexp(s, 2 * self.exp);
        if x == f64::INFINITY {
            return Some(f64::MAX);
        }
        let x = if x < f64::MIN_POSITIVE {
            x.next_down()
        } else {
            x
        };
        (x > 0.0).then_some(x)
    }
}
