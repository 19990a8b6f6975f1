//! The double-double route of the certificate ([`super`]): the compensated Gram matrix,
//! the Cholesky with its self-checked square roots and reciprocals, and the FMA builds of
//! their kernels (the Gram's in [`gram`]).

use super::*;

pub(super) struct DdGram {
    pub(super) n: usize,
    /// G̃ in double-double: hi and lo parts, n × n column-major, lower triangle valid.
    pub(super) hi: Vec<f64>,
    pub(super) lo: Vec<f64>,
    /// E_G.
    pub(super) term: f64,
}

impl DdGram {
    pub(super) fn new(sc: &Scaled) -> Self {
        let (hi, lo) = dd_gram(sc);
        Self {
            n: sc.n,
            hi,
            lo,
            term: mul_up(dd_gram_error_factor(sc.p), sc.frob2),
        }
    }

    pub(super) fn at(&self, i: usize, j: usize) -> Dd {
        Dd {
            hi: self.hi[j * self.n + i],
            lo: self.lo[j * self.n + i],
        }
    }

    /// B = fl(G̃ − shift·I) (lower triangle), as hi and lo parts.
    pub(super) fn shifted(&self, shift: f64) -> (Vec<f64>, Vec<f64>) {
        let n = self.n;
        let (mut hi, mut lo) = (self.hi.clone(), self.lo.clone());
        for j in 0..n {
            let b = self.at(j, j) - Dd::from_f64(shift);
            hi[j * n + j] = b.hi;
            lo[j * n + j] = b.lo;
        }
        (hi, lo)
    }

    pub(super) fn attempt(&self, sc: &Scaled, shift: f64) -> Outcome {
        let n = self.n;
        let (mut hi, mut lo) = self.shifted(shift);
        let bdiag: Vec<Dd> = (0..n)
            .map(|j| Dd {
                hi: hi[j * n + j],
                lo: lo[j * n + j],
            })
            .collect();
        let eps = match cholesky_dd(&mut hi, &mut lo, n) {
            Ok(eps) => eps,
            Err(column) => return Outcome::NotPositiveDefinite { column },
        };
        let gdiag: Vec<Dd> = (0..n).map(|j| self.at(j, j)).collect();
        conclude(
            shift,
            dd_budget(self.term, &gdiag, &bdiag, shift, eps, sc.p),
        )
    }
}

/// The budget of a completed Dd factorisation: Gram diagonal `gdiag`, B's diagonal `bdiag`,
/// ε from [`cholesky_dd`].
pub(super) fn dd_budget(
    gram: f64,
    gdiag: &[Dd],
    bdiag: &[Dd],
    shift: f64,
    eps: f64,
    p: usize,
) -> Budget {
    let n = gdiag.len();
    let biggest = gdiag
        .iter()
        .fold(0.0f64, |m, g| m.max(add_up(g.abs_upper(), shift)));
    let trace = bdiag.iter().fold(0.0, |t, b| add_up(t, b.abs_upper()));
    let gn = gamma(n, U_DD);
    let g_hat = if eps < 0.5 && gn < 0.5 {
        div_up(
            add_up(over_one_minus(eps), mul_up(2.0, gn)),
            sub_down(1.0, gn),
        )
    } else {
        f64::INFINITY
    };
    Budget::new(
        gram,
        mul_up(U_DD, biggest),
        mul_up(over_one_minus(g_hat), trace),
        underflow_term(n, p),
    )
}

/// A Dd square root of c > 0 (one Newton step from f64's) and τ ≥ |l² − c|/c (step 3).
pub(super) fn dd_sqrt(c: Dd) -> (Dd, f64) {
    let y0 = c.hi.sqrt();
    let r = c - Dd::from_product(y0, y0);
    let l = Dd::from_f64(y0) + Dd::from_f64(r.hi / (2.0 * y0));
    (l, sqrt_residual(c, l))
}

/// τ ≥ |l² − c|/c for any l and c > 2⁻⁹⁰⁰: with z = fl(l·l) and w = fl(z − c),
/// |l² − c| ≤ |w| + U(|z| + |c|) + U|l²| and |l²| ≤ |z|/(1 − U); 2⁻¹⁰⁷⁰ covers underflow.
pub(super) fn sqrt_residual(c: Dd, l: Dd) -> f64 {
    let z = l * l;
    let w = z - c;
    let zb = z.abs_upper();
    let err = add_up(
        add_up(
            add_up(w.abs_upper(), mul_up(U_DD, add_up(zb, c.abs_upper()))),
            mul_up(U_DD, div_up(zb, sub_down(1.0, U_DD))),
        ),
        pow2(-1070),
    );
    div_up(err, sub_down(c.hi, c.lo.abs()))
}

/// A Dd reciprocal of l > 0 (one Newton step from f64's) and ρ ≥ |l·inv − 1| (step 3).
pub(super) fn dd_recip(l: Dd) -> (Dd, f64) {
    let x0 = Dd::from_f64(1.0 / l.hi);
    let inv = x0 + x0 * (Dd::ONE - l * x0);
    (inv, recip_residual(l, inv))
}

/// ρ ≥ |l·inv − 1| for any l and inv: with z = fl(l·inv) and w = fl(z − 1),
/// |l·inv − 1| ≤ |w| + U(|z| + 1) + U|l·inv| and |l·inv| ≤ |z|/(1 − U); 2⁻¹⁰⁷⁰ covers
/// underflow.
pub(super) fn recip_residual(l: Dd, inv: Dd) -> f64 {
    let z = l * inv;
    let w = z - Dd::ONE;
    let zb = z.abs_upper();
    add_up(
        add_up(
            add_up(w.abs_upper(), mul_up(U_DD, add_up(zb, 1.0))),
            mul_up(U_DD, div_up(zb, sub_down(1.0, U_DD))),
        ),
        pow2(-1070),
    )
}

/// In-place lower Cholesky factorisation in double-double of the lower triangle of (hi, lo)
/// (n × n column-major). Ok(ε) of step 3, or Err(column) at a pivot ≤ MIN_PIVOT or not a
/// number.
pub(super) fn cholesky_dd(hi: &mut [f64], lo: &mut [f64], n: usize) -> Result<f64, usize> {
    let mut eps: f64 = 0.0;
    for k in 0..n {
        let c = Dd {
            hi: hi[k * n + k],
            lo: lo[k * n + k],
        };
        if !(c.hi > MIN_PIVOT && c.is_finite()) {
            return Err(k);
        }
        let (l, tau) = dd_sqrt(c);
        let (inv, rho) = dd_recip(l);
        if !(l.is_finite() && inv.is_finite() && tau.is_finite() && rho.is_finite()) {
            return Err(k);
        }
        let div = add_up(add_up(rho, U_DD), mul_up(rho, U_DD));
        eps = eps.max(tau).max(div);
        hi[k * n + k] = l.hi;
        lo[k * n + k] = l.lo;
        let below = k * n + k + 1..(k + 1) * n;
        dd_scale(&mut hi[below.clone()], &mut lo[below], inv);
        let (head_hi, tail_hi) = hi.split_at_mut((k + 1) * n);
        let (head_lo, tail_lo) = lo.split_at_mut((k + 1) * n);
        let (colk_hi, colk_lo) = (&head_hi[k * n..], &head_lo[k * n..]);
        let m = n - k - 1;
        let update = |c: usize, (ch, cl): (&mut [f64], &mut [f64])| {
            let j = k + 1 + c;
            let ljk = Dd {
                hi: colk_hi[j],
                lo: colk_lo[j],
            };
            dd_sub_scaled(
                &mut ch[j..],
                &mut cl[j..],
                &colk_hi[j..],
                &colk_lo[j..],
                ljk,
            );
        };
        if m * m >= 1 << 12 {
            tail_hi
                .par_chunks_mut(n)
                .zip(tail_lo.par_chunks_mut(n))
                .with_min_len(2)
                .enumerate()
                .for_each(|(c, cols)| update(c, cols));
        } else {
            tail_hi
                .chunks_mut(n)
                .zip(tail_lo.chunks_mut(n))
                .enumerate()
                .for_each(|(c, cols)| update(c, cols));
        }
    }
    let finite = (0..n).all(|j| {
        let r = j * n + j..(j + 1) * n;
        hi[r.clone()].iter().all(|x| x.is_finite()) && lo[r].iter().all(|x| x.is_finite())
    });
    if finite {
        Ok(eps)
    } else {
        Err(n.saturating_sub(1))
    }
}

/// Whether this CPU runs the FMA builds of the double-double kernels.
pub(super) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("fma") && std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `$name`, which runs `$imp` compiled with FMA and AVX2 when the CPU has them (the
/// crate is built for baseline x86-64, where `mul_add` is a library call). Same results on
/// every path: the operations are the same, `mul_add` is fused on each.
macro_rules! with_fma {
    ($vis:vis $name:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "fma,avx2")]
                unsafe fn fast($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if has_fma() {
                    // SAFETY: the CPU has FMA and AVX2 (checked just above).
                    return unsafe { fast($($arg),*) };
                }
            }
            $imp($($arg),*)
        }
    };
}

with_fma!(pub(super) dd_scale, dd_scale_imp, (hi: &mut [f64], lo: &mut [f64], s: Dd));
with_fma!(
    pub(super) dd_sub_scaled,
    dd_sub_scaled_imp,
    (c_hi: &mut [f64], c_lo: &mut [f64], a_hi: &[f64], a_lo: &[f64], s: Dd)
);
/// x ← x·s, element-wise.
#[inline(always)]
pub(super) fn dd_scale_imp(hi: &mut [f64], lo: &mut [f64], s: Dd) {
    for (h, l) in hi.iter_mut().zip(lo.iter_mut()) {
        let r = Dd { hi: *h, lo: *l } * s;
        (*h, *l) = (r.hi, r.lo);
    }
}

/// c ← c − a·s, element-wise.
#[inline(always)]
pub(super) fn dd_sub_scaled_imp(
    c_hi: &mut [f64],
    c_lo: &mut [f64],
    a_hi: &[f64],
    a_lo: &[f64],
    s: Dd,
) {
    let n = c_hi.len();
    let (c_lo, a_hi, a_lo) = (&mut c_lo[..n], &a_hi[..n], &a_lo[..n]);
    for i in 0..n {
        let r = Dd {
            hi: c_hi[i],
            lo: c_lo[i],
        } - Dd {
            hi: a_hi[i],
            lo: a_lo[i],
        } * s;
        c_hi[i] = r.hi;
        c_lo[i] = r.lo;
    }
}

mod gram;
pub(super) use gram::{dd_gram, dd_gram_error_factor};
#[cfg(test)]
pub(super) use gram::{dd_gram_tile, dd_gram_tile_imp, dd_gram_with};
