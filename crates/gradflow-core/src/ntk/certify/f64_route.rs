//! The f64 route of the certificate ([`super`]): faer's Gram matrix, its error budget, and a
//! right-looking Cholesky that stops at the first non-positive pivot.

use super::*;

pub(super) struct F64Gram {
    pub(super) n: usize,
    /// G̃, n × n column-major, lower triangle valid.
    pub(super) g: Vec<f64>,
    /// E_G.
    pub(super) term: f64,
}

impl F64Gram {
    pub(super) fn new(sc: &Scaled) -> Self {
        let n = sc.n;
        let js = sc.mat();
        let mut g = faer::Mat::<f64>::zeros(n, n);
        matmul(
            g.as_mut(),
            Accum::Replace,
            js,
            js.transpose(),
            1.0,
            crate::batch::par(),
        );
        let mut out = vec![0.0; n * n];
        for j in 0..n {
            for i in j..n {
                out[j * n + i] = g[(i, j)];
            }
        }
        Self {
            n,
            g: out,
            term: mul_up(gamma(sc.p, UNIT), sc.frob2),
        }
    }

    /// B = fl(G̃ − shift·I) (lower triangle).
    pub(super) fn shifted(&self, shift: f64) -> Vec<f64> {
        let n = self.n;
        let mut b = self.g.clone();
        for j in 0..n {
            b[j * n + j] -= shift;
        }
        b
    }

    pub(super) fn attempt(&self, sc: &Scaled, shift: f64) -> Outcome {
        let n = self.n;
        let mut b = self.shifted(shift);
        let diag: Vec<f64> = (0..n).map(|j| b[j * n + j]).collect();
        if let Err(column) = cholesky_f64(&mut b, n) {
            return Outcome::NotPositiveDefinite { column };
        }
        conclude(shift, f64_budget(self.term, &diag, n, sc.p))
    }
}

/// The budget of a completed f64 factorisation of B with diagonal `diag`.
pub(super) fn f64_budget(gram: f64, diag: &[f64], n: usize, p: usize) -> Budget {
    let trace = diag.iter().fold(0.0, |t, &b| add_up(t, b.abs()));
    let biggest = diag.iter().fold(0.0f64, |m, &b| m.max(b.abs()));
    Budget::new(
        gram,
        mul_up(UNIT, biggest),
        mul_up(over_one_minus(gamma(n + 1, UNIT)), trace),
        underflow_term(n, p),
    )
}

/// In-place lower Cholesky factorisation of the lower triangle of `b` (n × n column-major);
/// Err(column) at a pivot ≤ MIN_PIVOT or not a number.
pub(super) fn cholesky_f64(b: &mut [f64], n: usize) -> Result<(), usize> {
    for k in 0..n {
        let c = b[k * n + k];
        if !(c > MIN_PIVOT && c.is_finite()) {
            return Err(k);
        }
        let l = c.sqrt();
        b[k * n + k] = l;
        for x in &mut b[k * n + k + 1..(k + 1) * n] {
            *x /= l;
        }
        let (head, tail) = b.split_at_mut((k + 1) * n);
        let colk = &head[k * n..];
        for_trailing_columns(tail, n, k + 1, |j, col| {
            let ljk = colk[j];
            for (c, &lik) in col[j..].iter_mut().zip(&colk[j..]) {
                *c -= lik * ljk;
            }
        });
    }
    if (0..n).all(|j| b[j * n + j..(j + 1) * n].iter().all(|x| x.is_finite())) {
        Ok(())
    } else {
        Err(n.saturating_sub(1))
    }
}
