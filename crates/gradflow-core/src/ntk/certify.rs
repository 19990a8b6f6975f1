//! A certified lower bound on λ_min(J Jᵀ): a proof, carried out in floating point, that the NTK
//! H = J Jᵀ of the exact Jacobian J is positive definite with λ_min(H) ≥ `lower` > 0, given the
//! computed J̃ and a bound e ≥ ‖J − J̃‖_F. [`certify_lambda_min`] is the entry point.
//!
//! # The argument
//!
//! n = rows of J̃ (nm), p = columns, u = 2⁻⁵³, U = 2⁻¹⁰⁰ (double-double, "Dd", see
//! [`super::double_double`]); γ_k = ku/(1 − ku) and γ'_k the same with U. ‖·‖ is the spectral
//! norm; if |E| ≤ M entrywise then ‖E‖ ≤ ‖M‖ ≤ ‖M‖_F.
//!
//! 0. *Scaling.* J̃ is multiplied by 2^(−k) so that max|J̃_ij| ∈ [½, 1). This is exact except
//!    for entries that land below 2⁻¹⁰²² (only when scaling down), each then moved by less than
//!    2⁻¹⁰⁷⁴; √(their count)·2⁻¹⁰⁷⁴ is added to e. Everything below is in scaled units (λ and G
//!    scale by 2^(−2k), e by 2^(−k)); the bound is scaled back at the end.
//! 1. *Gram.* G = J̃J̃ᵀ; G̃ is its computed lower triangle (the upper one is never read).
//!    f64: faer's matmul. Each entry is a sum of p products in some order, with or without FMA,
//!    so |G̃ − G| ≤ γ_p|J̃||J̃|ᵀ (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1,
//!    any order) and ‖G̃ − G‖ ≤ γ_p‖J̃‖_F² =: E_G.
//!    Dd: each entry adds the exact products two_prod(J̃_ik, J̃_jk) in order of k with Dd
//!    additions, which only satisfy |fl(x + y) − (x + y)| ≤ U(|x| + |y|). *Tree lemma:* in an
//!    evaluation tree whose leaves are exact or carry a relative error ≤ U, whose inner nodes
//!    are such additions, and whose leaves sit at depth ≤ D (a leaf's own rounding counted), the
//!    result is within ((1+U)^D − 1)·Σ|leaves| ≤ γ'_D·Σ|leaves| of the exact one (induction: a
//!    node of depth d over leaves of total size A is computed within ((1+U)^d − 1)A and is at
//!    most (1+U)^d·A in size). Here D ≤ p: E_G = γ'_p‖J̃‖_F².
//! 2. *Shift.* B = fl(G̃ − s'I) changes the diagonal only, so D := B − (G̃ − s'I) is diagonal:
//!    |d_jj| ≤ u|b_jj| (f64: one rounding, relative to its result) or ≤ U(|g̃_jj| + s') (Dd).
//!    E_D = the largest of those.
//! 3. *Cholesky* of B, right-looking (c_ij ← c_ij − l_ik·l_jk for k = 1, 2, …), stopping with
//!    "not positive definite" at a pivot ≤ 2⁻⁹⁰⁰ or not a number. If it completes,
//!    LLᵀ = B + ΔB with |ΔB| ≤ ĝ·|L||L|ᵀ, where
//!    f64: ĝ = γ_{n+1} (Higham Thm 10.3; by his Lemma 8.4 it holds for any order of the inner
//!    products).
//!    Dd: c̃_ij, the computed b_ij − Σ_{k<j} l_ik l_jk, is within γ'_n(|b_ij| + Σ_{k<j}|l_ik l_jk|)
//!    of the exact one (tree lemma, products being relative-U leaves). The division is a product
//!    by a Dd reciprocal inv_j ≈ 1/l_jj and l_jj is a Newton-corrected Dd square root; neither is
//!    trusted: per pivot the code bounds ρ_j ≥ |l_jj·inv_j − 1| and τ_j ≥ |l_jj² − c̃_jj|/c̃_jj
//!    by evaluating the residuals in Dd and adding that evaluation's own error bound. Then
//!    |l_jj·l_ij − c̃_ij| ≤ ε|c̃_ij| for every i ≥ j, ε = max_j max((1+ρ_j)(1+U) − 1, τ_j). With
//!    S_ij = Σ_{k≤j}|l_ik l_jk|: |c̃_ij| ≤ S_ij/(1 − ε) and |b_ij| ≤ S_ij + |ΔB_ij|, and
//!    ΔB_ij = (l_jj l_ij − c̃_ij) + (c̃_ij − c_ij) gives |ΔB_ij| ≤ ĝ S_ij with
//!    ĝ = (ε/(1 − ε) + 2γ'_n)/(1 − γ'_n).
//!    Both: the diagonal of LLᵀ = B + ΔB gives Σ_k l_jk² ≤ b_jj + ĝ·Σ_k l_jk², so
//!    ‖L‖_F² ≤ tr(B)/(1 − ĝ) and ‖ΔB‖ ≤ ĝ‖|L|‖² ≤ ĝ/(1 − ĝ)·tr(B) =: E_C.
//! 4. *Underflow.* Steps 1–3 assume none. A product (or fma, division) that rounds into the
//!    subnormal range commits an absolute error ≤ 2⁻¹⁰⁷⁵ on top; sums never do (they are exact
//!    there). After the scaling |g_ij| ≤ p and |l_ij| ≤ √p·(1 + ĝ); an entry of G̃ takes at most
//!    p such errors, one of ΔB at most 3n (inner products) plus 3 multiplied by l_jj (division),
//!    each grown by at most a factor 2 on the way. So ‖·‖ of their sum is below
//!    E_U = n(p + n + √p + 2)·2⁻¹⁰⁷⁰ (with room). The pivot floor 2⁻⁹⁰⁰ keeps 1/l_jj ≤ 2⁴⁵⁰,
//!    so the Dd reciprocals and ρ_j, τ_j (which carry a 2⁻¹⁰⁷⁰ term for the same reason) are
//!    evaluated far from both ends of the range.
//! 5. *Conclusion.* G − s'I = LLᵀ − ΔB − D − (G̃ − G) with LLᵀ ⪰ 0, so
//!    λ_min(G) ≥ s := s' − (E_G + E_D + E_C + E_U).
//! 6. *The bound's own arithmetic.* E_G, …, s (and ρ_j, τ_j) are evaluated in f64 with every
//!    result stepped one ulp outward (`next_up`, `next_down`): round to nearest is within half
//!    an ulp, so this rounds in the safe direction, and the operands are non-negative where
//!    monotonicity is needed. The total budget is also multiplied by 1 + 2⁻²⁰, a margin the
//!    argument does not use.
//! 7. *The exact J* (Weyl): σ_min(J) ≥ σ_min(J̃) − ‖J − J̃‖ ≥ √s − e, so
//!    λ_min(JJᵀ) ≥ (√s − e)² when √s > e, evaluated with outward steps as in 6.
//!
//! # The search
//!
//! Shifts s' = {0.9, 0.75, 0.5, 0.25}·estimate, largest first; the first that proves s > 0
//! is kept (a larger successful shift gives the larger bound: the budget barely depends on s').
//! f64 goes first (n²p + n³/3 flops) unless its floor (γ_p + γ_{n+1})‖J̃‖_F² is ≥ 0.9·estimate;
//! Dd follows when f64's floor exceeds 1% of the estimate (f64 may then have failed, or lost
//! over 1% of its bound, to rounding); below that, f64 resolves λ_min to within a few percent of
//! the shifts and Dd could not do materially better. The larger bound wins. Dd resolves λ_min
//! down to about (p + 2n)U‖J̃‖_F²; its Gram is n²p/2 exact products and Dd additions, run on
//! rayon over blocks of 8 columns (two rows at a time, so 16 sums are in flight), and its
//! Cholesky n³/6 Dd multiply-subtracts, parallel over trailing columns.

use super::double_double::{Dd, U as UNIT, U_DD};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef};
use rayon::prelude::*;

/// Which arithmetic proved the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CertificateArithmetic {
    F64,
    DoubleDouble,
}

impl CertificateArithmetic {
    fn name(self) -> &'static str {
        match self {
            Self::F64 => "f64",
            Self::DoubleDouble => "double-double",
        }
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Certificate {
    /// Proven: λ_min(J Jᵀ) ≥ lower > 0 for the exact Jacobian J with ‖J − J̃‖_F ≤
    /// jacobian_error. None when nothing positive could be proven.
    pub lower: Option<f64>,
    pub arithmetic: Option<CertificateArithmetic>,
    /// Why no bound was proven (None when `lower` is Some).
    pub reason: Option<String>,
}

/// Shifts tried, as fractions of the estimate, largest first.
const SHIFTS: [f64; 4] = [0.9, 0.75, 0.5, 0.25];
/// Pivots at or below this (scaled units) count as "not positive definite" (see step 4).
const MIN_PIVOT: f64 = pow2(-900);
/// 1 + 2⁻²⁰: the margin on the total budget.
const MARGIN: f64 = 1.0 + 1.0 / (1u64 << 20) as f64;
/// Columns per block of the double-double Gram kernel.
const LANES: usize = 8;

/// j: the computed Jacobian J̃ (rows = nm outputs, cols = p params; nm ≤ p expected, else
/// refuse with a reason).
/// jacobian_error: a rigorous bound on ‖J − J̃‖_F (0.0 to certify J̃ J̃ᵀ itself).
/// estimate: an approximate λ_min(J̃ J̃ᵀ) (e.g. σ_min(J̃)² from an SVD), the start of the search;
/// ≤ 0 is refused with a reason.
///
/// ```
/// use gradflow_core::ntk::certify::certify_lambda_min;
///
/// // J = [[2, 0, 0], [0, 1, 0]]: H = J Jᵀ = diag(4, 1), λ_min = 1 exactly.
/// let j = faer::mat![[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
/// let c = certify_lambda_min(j.as_ref(), 0.0, 1.0);
/// let lower = c.lower.expect("a bound");
/// assert!(lower > 0.0 && lower <= 1.0);
/// // An error of 0.5 in J (Frobenius) can move σ_min by 0.5: the bound must stay below 0.25.
/// let c = certify_lambda_min(j.as_ref(), 0.5, 1.0);
/// assert!(c.lower.is_none_or(|s| s <= 0.25));
/// ```
pub fn certify_lambda_min(
    j: faer::MatRef<'_, f64>,
    jacobian_error: f64,
    estimate: f64,
) -> Certificate {
    match certify(j, jacobian_error, estimate) {
        Ok((lower, arithmetic)) => Certificate {
            lower: Some(lower),
            arithmetic: Some(arithmetic),
            reason: None,
        },
        Err(reason) => Certificate {
            lower: None,
            arithmetic: None,
            reason: Some(reason),
        },
    }
}

/// One shift, one arithmetic: Some(s) when λ_min(J̃ J̃ᵀ) ≥ s > 0 is proven by the shifted
/// Cholesky factorisation at `shift` (the steps 1–6 of the module doc), else None.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn certify_at(
    j: MatRef<'_, f64>,
    shift: f64,
    arithmetic: CertificateArithmetic,
) -> Option<f64> {
    let sc = Scaled::new(j).ok()?;
    let s = sc.down_to_scale(shift);
    let outcome = match arithmetic {
        CertificateArithmetic::F64 => F64Gram::new(&sc).attempt(&sc, s),
        CertificateArithmetic::DoubleDouble => DdGram::new(&sc).attempt(&sc, s),
    };
    match outcome {
        Outcome::Proven { bound } => sc.bound_to_original(bound),
        _ => None,
    }
}

fn certify(
    j: MatRef<'_, f64>,
    jacobian_error: f64,
    estimate: f64,
) -> Result<(f64, CertificateArithmetic), String> {
    let (n, p) = (j.nrows(), j.ncols());
    if n == 0 || p == 0 {
        return Err(format!(
            "the Jacobian is empty ({n} × {p}): there is nothing to certify"
        ));
    }
    if n > p {
        return Err(format!(
            "nm = {n} > p = {p}: H = J Jᵀ has rank at most p, so it is singular by the rank bound"
        ));
    }
    if !jacobian_error.is_finite() || jacobian_error < 0.0 {
        return Err(format!(
            "the Jacobian error bound must be a finite number ≥ 0, got {jacobian_error:e}"
        ));
    }
    if !estimate.is_finite() || estimate <= 0.0 {
        return Err(format!(
            "no positive estimate of λ_min(J̃ J̃ᵀ) was given (estimate = {estimate:e}), so there \
             is no shift to start the search from"
        ));
    }
    let sc = Scaled::new(j)?;
    let est = sc.down_to_scale(estimate);
    if !est.is_finite() || est <= 0.0 {
        return Err(format!(
            "the estimate {estimate:e} is outside the range of f64 at the scale of J̃'s entries \
             (max |J̃_ij| ≈ 2^{})",
            sc.exp
        ));
    }
    let show = |x: f64| sc.g_to_original(x);
    let f64_floor = mul_up(add_up(gamma(p, UNIT), gamma(n + 1, UNIT)), sc.frob2);
    let dd_floor = mul_up(
        add_up(gamma(p, U_DD), mul_up(2.0, gamma(n, U_DD))),
        sc.frob2,
    );

    // Why nothing was proven: the arithmetics whose factorisation failed at every shift, and
    // sentences on the others.
    let mut not_pd: Vec<&str> = Vec::new();
    let mut notes = Vec::new();
    let mut best: Option<(f64, CertificateArithmetic)> = None;
    let unresolvable = |arith: CertificateArithmetic, floor: f64| {
        format!(
            "{} cannot resolve λ_min here: its rounding-error floor ≈ {:.3e} is not below \
             0.9·estimate = {:.3e}",
            arith.name(),
            show(floor),
            0.9 * estimate
        )
    };
    if f64_floor < 0.9 * est {
        let gram = F64Gram::new(&sc);
        let (found, tried) = search(est, |s| gram.attempt(&sc, s));
        match found {
            Some(s) => best = Some((s, CertificateArithmetic::F64)),
            None => match describe(CertificateArithmetic::F64, &tried, estimate, &show) {
                Some(note) => notes.push(note),
                None => not_pd.push(CertificateArithmetic::F64.name()),
            },
        }
    } else {
        notes.push(unresolvable(CertificateArithmetic::F64, f64_floor));
    }
    if f64_floor > 0.01 * est {
        if dd_floor < 0.9 * est {
            let gram = DdGram::new(&sc);
            let (found, tried) = search(est, |s| gram.attempt(&sc, s));
            match found {
                Some(s) => {
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, CertificateArithmetic::DoubleDouble));
                    }
                }
                None => {
                    match describe(CertificateArithmetic::DoubleDouble, &tried, estimate, &show) {
                        Some(note) => notes.push(note),
                        None => not_pd.push(CertificateArithmetic::DoubleDouble.name()),
                    }
                }
            }
        } else {
            notes.push(unresolvable(CertificateArithmetic::DoubleDouble, dd_floor));
        }
    }
    let Some((s, arith)) = best else {
        let last = SHIFTS[SHIFTS.len() - 1];
        let failed = (!not_pd.is_empty()).then(|| {
            format!(
                "the shifted Cholesky factorisation failed at every shift from {}·estimate = \
                 {:.3e} down to {last}·estimate = {:.3e} in {}",
                SHIFTS[0],
                SHIFTS[0] * estimate,
                last * estimate,
                not_pd.join(" and in ")
            )
        });
        return Err(match failed {
            Some(failed) if notes.is_empty() => {
                format!("J̃ J̃ᵀ is not positive definite to within rounding: {failed}")
            }
            failed => format!(
                "no positive lower bound on λ_min(J̃ J̃ᵀ) could be proven: {}",
                failed
                    .into_iter()
                    .chain(notes)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    };

    // Step 7: from J̃ to J.
    let e = sc.jacobian_error_to_scale(jacobian_error);
    let lower = if e == 0.0 {
        s
    } else {
        let root = s.sqrt().next_down();
        let gap = sub_down(root, e);
        if gap.is_nan() || gap <= 0.0 {
            return Err(format!(
                "the Jacobian error bound ‖J − J̃‖_F ≤ {:.3e} is not below √s = {:.3e}, where \
                 λ_min(J̃ J̃ᵀ) ≥ s = {:.3e} was proven in {}: the exact J may be singular",
                sc.sigma_to_original(e),
                sc.sigma_to_original(root),
                show(s),
                arith.name()
            ));
        }
        mul_down(gap, gap)
    };
    match sc.bound_to_original(lower) {
        Some(l) => Ok((l, arith)),
        None => Err(format!(
            "λ_min(J Jᵀ) ≥ {:.3e}·2^{} was proven in {}, which underflows f64",
            lower,
            2 * sc.exp,
            arith.name()
        )),
    }
}

/// Tries the shifts largest first; the first proven bound, and every outcome.
fn search(est: f64, mut attempt: impl FnMut(f64) -> Outcome) -> (Option<f64>, Vec<(f64, Outcome)>) {
    let mut tried = Vec::new();
    for f in SHIFTS {
        let shift = f * est;
        let outcome = attempt(shift);
        if let Outcome::Proven { bound } = outcome {
            return (Some(bound), tried);
        }
        tried.push((shift, outcome));
    }
    (None, tried)
}

/// A sentence on why an arithmetic proved nothing; None when the factorisation failed at every
/// shift (the caller words that case).
fn describe(
    arith: CertificateArithmetic,
    tried: &[(f64, Outcome)],
    estimate: f64,
    show: &dyn Fn(f64) -> f64,
) -> Option<String> {
    if tried
        .iter()
        .all(|(_, o)| matches!(o, Outcome::NotPositiveDefinite { .. }))
    {
        return None;
    }
    let parts: Vec<String> = SHIFTS
        .iter()
        .zip(tried)
        .map(|(f, (_, o))| match o {
            Outcome::NotPositiveDefinite { column } => {
                format!("at {f}·estimate the factorisation failed (pivot {column} not positive)")
            }
            Outcome::BudgetTooLarge { budget } => format!(
                "at {f}·estimate = {:.3e} it succeeded but the rounding-error budget {:.3e} is \
                 not below the shift",
                f * estimate,
                show(budget.total)
            ),
            Outcome::Proven { .. } => unreachable!("a proven shift ends the search"),
        })
        .collect();
    Some(format!("in {}: {}", arith.name(), parts.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// Outward-rounded arithmetic on bounds (step 6).

#[inline]
fn add_up(a: f64, b: f64) -> f64 {
    (a + b).next_up()
}
#[inline]
fn mul_up(a: f64, b: f64) -> f64 {
    (a * b).next_up()
}
#[inline]
fn div_up(a: f64, b: f64) -> f64 {
    (a / b).next_up()
}
#[inline]
fn sub_down(a: f64, b: f64) -> f64 {
    (a - b).next_down()
}
#[inline]
fn mul_down(a: f64, b: f64) -> f64 {
    (a * b).next_down()
}

/// An upper bound on γ_k = ku/(1 − ku) (∞ when ku ≥ ½).
fn gamma(k: usize, u: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let ku = mul_up(k as f64, u);
    if ku >= 0.5 {
        return f64::INFINITY;
    }
    div_up(ku, sub_down(1.0, ku))
}

/// An upper bound on g/(1 − g) (∞ when g ≥ ½).
fn over_one_minus(g: f64) -> f64 {
    if g.is_nan() || g >= 0.5 {
        return f64::INFINITY;
    }
    div_up(g, sub_down(1.0, g))
}

/// E_U of step 4.
fn underflow_term(n: usize, p: usize) -> f64 {
    let sqrt_p = (p as f64).sqrt().next_up();
    let count = add_up(add_up(add_up(p as f64, n as f64), sqrt_p), 2.0);
    mul_up(mul_up(n as f64, count), pow2(-1070))
}

/// 2^e as an f64 (−1074 ≤ e ≤ 1023).
const fn pow2(e: i32) -> f64 {
    if e >= -1022 {
        f64::from_bits(((e + 1023) as u64) << 52)
    } else {
        f64::from_bits(1u64 << (e + 1074))
    }
}

/// x·2^e, in steps that stay in range (each exact unless the result leaves the normal range).
fn ldexp(mut x: f64, mut e: i32) -> f64 {
    while e > 1000 {
        x *= pow2(1000);
        e -= 1000;
    }
    while e < -1000 {
        x *= pow2(-1000);
        e += 1000;
    }
    x * pow2(e)
}

/// The e with 2^(e−1) ≤ m < 2^e (m > 0 finite).
fn binary_exponent(m: f64) -> i32 {
    let biased = ((m.to_bits() >> 52) & 0x7ff) as i32;
    if biased == 0 {
        binary_exponent(m * pow2(54)) - 54
    } else {
        biased - 1022
    }
}

// ---------------------------------------------------------------------------------------------
// Step 0: J̃ scaled to max|entry| ∈ [½, 1), column-major with rows padded to a multiple of LANES.

struct Scaled {
    n: usize,
    p: usize,
    n_pad: usize,
    /// Column k at k·n_pad; rows n..n_pad are zero.
    data: Vec<f64>,
    /// The scaled J̃ is 2^(−exp)·J̃ (up to `rounding`).
    exp: i32,
    /// An upper bound on ‖scaled J̃‖_F².
    frob2: f64,
    /// An upper bound on ‖scaled J̃ − 2^(−exp)·J̃‖_F (entries that landed in the subnormal range).
    rounding: f64,
}

impl Scaled {
    fn new(j: MatRef<'_, f64>) -> Result<Self, String> {
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

    fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice_with_stride(&self.data, self.n, self.p, self.n_pad)
    }

    /// A λ-like quantity (units of J̃²) in scaled units; only used as a shift, so its rounding
    /// does not matter.
    fn down_to_scale(&self, x: f64) -> f64 {
        ldexp(x, -2 * self.exp)
    }

    /// A scaled λ-like quantity in original units, for messages.
    fn g_to_original(&self, x: f64) -> f64 {
        ldexp(x, 2 * self.exp)
    }

    fn sigma_to_original(&self, x: f64) -> f64 {
        ldexp(x, self.exp)
    }

    /// An upper bound on ‖J − scaled J̃‖_F in scaled units, from one on ‖J − J̃‖_F.
    fn jacobian_error_to_scale(&self, e: f64) -> f64 {
        if e == 0.0 && self.rounding == 0.0 {
            return 0.0;
        }
        add_up(ldexp(e, -self.exp).next_up(), self.rounding)
    }

    /// A proven scaled lower bound in original units, rounded down; None if that underflows.
    fn bound_to_original(&self, s: f64) -> Option<f64> {
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

// ---------------------------------------------------------------------------------------------
// Steps 2–5 for one shift.

/// The error budget of one proven shift (scaled units), term by term.
#[derive(Clone, Copy, Debug)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) struct Budget {
    pub gram: f64,
    pub shift: f64,
    pub cholesky: f64,
    pub underflow: f64,
    pub total: f64,
}

impl Budget {
    fn new(gram: f64, shift: f64, cholesky: f64, underflow: f64) -> Self {
        let sum = add_up(add_up(add_up(gram, shift), cholesky), underflow);
        Self {
            gram,
            shift,
            cholesky,
            underflow,
            total: mul_up(sum, MARGIN),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    /// λ_min(J̃ J̃ᵀ) ≥ bound > 0 (scaled units).
    Proven { bound: f64 },
    /// The shifted Cholesky factorisation stopped at this column.
    NotPositiveDefinite { column: usize },
    /// It completed, but the budget is not below the shift.
    BudgetTooLarge { budget: Budget },
}

fn conclude(shift: f64, budget: Budget) -> Outcome {
    let bound = sub_down(shift, budget.total);
    if bound > 0.0 {
        Outcome::Proven { bound }
    } else {
        Outcome::BudgetTooLarge { budget }
    }
}

/// Runs `f(j, column j)` for every column j in `from..n` of an n × n column-major buffer, on
/// rayon when there is enough work.
fn for_trailing_columns(
    tail: &mut [f64],
    n: usize,
    from: usize,
    f: impl Fn(usize, &mut [f64]) + Sync,
) {
    let m = n - from;
    if m * m >= 1 << 14 {
        tail.par_chunks_mut(n)
            .with_min_len(4)
            .enumerate()
            .for_each(|(c, col)| f(from + c, col));
    } else {
        tail.chunks_mut(n)
            .enumerate()
            .for_each(|(c, col)| f(from + c, col));
    }
}

// ----- f64 ------------------------------------------------------------------------------------

struct F64Gram {
    n: usize,
    /// G̃, n × n column-major, lower triangle valid.
    g: Vec<f64>,
    /// E_G.
    term: f64,
}

impl F64Gram {
    fn new(sc: &Scaled) -> Self {
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
    fn shifted(&self, shift: f64) -> Vec<f64> {
        let n = self.n;
        let mut b = self.g.clone();
        for j in 0..n {
            b[j * n + j] -= shift;
        }
        b
    }

    fn attempt(&self, sc: &Scaled, shift: f64) -> Outcome {
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
fn f64_budget(gram: f64, diag: &[f64], n: usize, p: usize) -> Budget {
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
fn cholesky_f64(b: &mut [f64], n: usize) -> Result<(), usize> {
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

// ----- double-double --------------------------------------------------------------------------

struct DdGram {
    n: usize,
    /// G̃ in double-double: hi and lo parts, n × n column-major, lower triangle valid.
    hi: Vec<f64>,
    lo: Vec<f64>,
    /// E_G.
    term: f64,
}

impl DdGram {
    fn new(sc: &Scaled) -> Self {
        let n = sc.n;
        let blocks = n.div_ceil(LANES);
        let mut hi = vec![0.0; blocks * LANES * n];
        let mut lo = vec![0.0; blocks * LANES * n];
        hi.par_chunks_mut(LANES * n)
            .zip(lo.par_chunks_mut(LANES * n))
            .enumerate()
            .for_each(|(b, (h, l))| dd_gram_block(sc, b * LANES, h, l));
        hi.truncate(n * n);
        lo.truncate(n * n);
        Self {
            n,
            hi,
            lo,
            term: mul_up(gamma(sc.p, U_DD), sc.frob2),
        }
    }

    fn at(&self, i: usize, j: usize) -> Dd {
        Dd {
            hi: self.hi[j * self.n + i],
            lo: self.lo[j * self.n + i],
        }
    }

    /// B = fl(G̃ − shift·I) (lower triangle), as hi and lo parts.
    fn shifted(&self, shift: f64) -> (Vec<f64>, Vec<f64>) {
        let n = self.n;
        let (mut hi, mut lo) = (self.hi.clone(), self.lo.clone());
        for j in 0..n {
            let b = self.at(j, j) - Dd::from_f64(shift);
            hi[j * n + j] = b.hi;
            lo[j * n + j] = b.lo;
        }
        (hi, lo)
    }

    fn attempt(&self, sc: &Scaled, shift: f64) -> Outcome {
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
fn dd_budget(gram: f64, gdiag: &[Dd], bdiag: &[Dd], shift: f64, eps: f64, p: usize) -> Budget {
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
fn dd_sqrt(c: Dd) -> (Dd, f64) {
    let y0 = c.hi.sqrt();
    let r = c - Dd::from_product(y0, y0);
    let l = Dd::from_f64(y0) + Dd::from_f64(r.hi / (2.0 * y0));
    (l, sqrt_residual(c, l))
}

/// τ ≥ |l² − c|/c for any l and c > 2⁻⁹⁰⁰: with z = fl(l·l) and w = fl(z − c),
/// |l² − c| ≤ |w| + U(|z| + |c|) + U|l²| and |l²| ≤ |z|/(1 − U); 2⁻¹⁰⁷⁰ covers underflow.
fn sqrt_residual(c: Dd, l: Dd) -> f64 {
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
fn dd_recip(l: Dd) -> (Dd, f64) {
    let x0 = Dd::from_f64(1.0 / l.hi);
    let inv = x0 + x0 * (Dd::ONE - l * x0);
    (inv, recip_residual(l, inv))
}

/// ρ ≥ |l·inv − 1| for any l and inv: with z = fl(l·inv) and w = fl(z − 1),
/// |l·inv − 1| ≤ |w| + U(|z| + 1) + U|l·inv| and |l·inv| ≤ |z|/(1 − U); 2⁻¹⁰⁷⁰ covers
/// underflow.
fn recip_residual(l: Dd, inv: Dd) -> f64 {
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
fn cholesky_dd(hi: &mut [f64], lo: &mut [f64], n: usize) -> Result<f64, usize> {
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
fn has_fma() -> bool {
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
    ($name:ident, $imp:ident, ($($arg:ident: $ty:ty),*)) => {
        fn $name($($arg: $ty),*) {
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

with_fma!(dd_scale, dd_scale_imp, (hi: &mut [f64], lo: &mut [f64], s: Dd));
with_fma!(
    dd_sub_scaled,
    dd_sub_scaled_imp,
    (c_hi: &mut [f64], c_lo: &mut [f64], a_hi: &[f64], a_lo: &[f64], s: Dd)
);
with_fma!(
    dd_gram_block,
    dd_gram_block_imp,
    (sc: &Scaled, j0: usize, hi: &mut [f64], lo: &mut [f64])
);

/// x ← x·s, element-wise.
#[inline(always)]
fn dd_scale_imp(hi: &mut [f64], lo: &mut [f64], s: Dd) {
    for (h, l) in hi.iter_mut().zip(lo.iter_mut()) {
        let r = Dd { hi: *h, lo: *l } * s;
        (*h, *l) = (r.hi, r.lo);
    }
}

/// c ← c − a·s, element-wise.
#[inline(always)]
fn dd_sub_scaled_imp(c_hi: &mut [f64], c_lo: &mut [f64], a_hi: &[f64], a_lo: &[f64], s: Dd) {
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

/// Columns j0..j0 + LANES of the double-double Gram matrix, rows i ≥ j0, into `hi`/`lo`
/// (LANES columns of n, column-major): each entry Σ_k of the exact products two_prod(J̃_ik,
/// J̃_jk), added in order of k with Dd additions. Two rows at a time.
#[inline(always)]
fn dd_gram_block_imp(sc: &Scaled, j0: usize, hi: &mut [f64], lo: &mut [f64]) {
    let (n, n_pad, p) = (sc.n, sc.n_pad, sc.p);
    let mut i = j0;
    while i < n {
        let i1 = (i + 1).min(n - 1);
        let mut acc_hi = [[0.0f64; LANES]; 2];
        let mut acc_lo = [[0.0f64; LANES]; 2];
        for col in sc.data.chunks_exact(n_pad).take(p) {
            let b: &[f64; LANES] = col[j0..j0 + LANES].try_into().unwrap();
            let a = [col[i], col[i1]];
            for r in 0..2 {
                for l in 0..LANES {
                    let s = Dd {
                        hi: acc_hi[r][l],
                        lo: acc_lo[r][l],
                    } + Dd::from_product(a[r], b[l]);
                    acc_hi[r][l] = s.hi;
                    acc_lo[r][l] = s.lo;
                }
            }
        }
        let rows = if i1 > i { 2 } else { 1 };
        for (r, row) in [i, i1].into_iter().enumerate().take(rows) {
            // Lower triangle only: columns j0 + l ≤ row.
            for l in 0..LANES.min(row + 1 - j0) {
                hi[l * n + row] = acc_hi[r][l];
                lo[l * n + row] = acc_lo[r][l];
            }
        }
        i += 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ntk::double_double::exact::Expansion;
    use faer::Mat;
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};
    use rand_distr::{Distribution, StandardNormal};
    use CertificateArithmetic::{DoubleDouble, F64};

    fn gaussian(rng: &mut StdRng, n: usize) -> Vec<f64> {
        (0..n).map(|_| StandardNormal.sample(rng)).collect()
    }

    /// J = Q₁ [diag(σ) 0] Q₂ᵀ, Q₁ (n × n) and Q₂ (p × p) each a product of `reflectors` random
    /// Householder reflectors, applied in f64.
    fn householder_j(sigma: &[f64], p: usize, reflectors: usize, seed: u64) -> Mat<f64> {
        let n = sigma.len();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut m = Mat::<f64>::zeros(n, p);
        for (i, &s) in sigma.iter().enumerate() {
            m[(i, i)] = s;
        }
        for _ in 0..reflectors {
            let v = gaussian(&mut rng, p);
            let vv: f64 = v.iter().map(|x| x * x).sum();
            for i in 0..n {
                let d: f64 = (0..p).map(|k| m[(i, k)] * v[k]).sum();
                let f = 2.0 * d / vv;
                for k in 0..p {
                    m[(i, k)] -= f * v[k];
                }
            }
        }
        for _ in 0..reflectors {
            let w = gaussian(&mut rng, n);
            let ww: f64 = w.iter().map(|x| x * x).sum();
            for k in 0..p {
                let d: f64 = (0..n).map(|i| w[i] * m[(i, k)]).sum();
                let f = 2.0 * d / ww;
                for i in 0..n {
                    m[(i, k)] -= f * w[i];
                }
            }
        }
        m
    }

    /// Log-spaced singular values from 1 down to `smallest`.
    fn log_spaced(n: usize, smallest: f64) -> Vec<f64> {
        (0..n)
            .map(|i| smallest.powf(i as f64 / (n - 1) as f64))
            .collect()
    }

    fn sigma_min(j: &Mat<f64>) -> f64 {
        let s = j.singular_values().expect("svd");
        s.iter().copied().fold(f64::INFINITY, f64::min)
    }

    /// An exactly known spectrum: J = D₁ H_n Σ P with H_n the Sylvester–Hadamard matrix, P
    /// n distinct rows of H_p with columns permuted and signs flipped (P Pᵀ = p I), D₁ random
    /// signs, σ_1 = 1, σ_n = 2^−q, the others m·2⁻⁴⁶ in between. Every entry is a sum of n ≤ 64
    /// multiples of 2⁻⁴⁶ below 2⁷, so J is computed exactly, and J Jᵀ = p·D₁H_nΣ²H_nᵀD₁ has
    /// eigenvalues p·n·σ_j²: λ_min = p·n·2^−2q exactly.
    fn hadamard_j(n: usize, p: usize, q: i32, seed: u64) -> (Mat<f64>, f64) {
        assert!(n.is_power_of_two() && p.is_power_of_two() && n <= 64 && n <= p && q <= 46);
        let mut rng = StdRng::seed_from_u64(seed);
        let h = |i: usize, j: usize| {
            if (i & j).count_ones().is_multiple_of(2) {
                1.0
            } else {
                -1.0
            }
        };
        let sign = |rng: &mut StdRng| if rng.random::<bool>() { 1.0 } else { -1.0 };
        let mut sigma = vec![1.0; n];
        sigma[n - 1] = 2f64.powi(-q);
        for s in &mut sigma[1..n - 1] {
            let t: f64 = rng.random();
            *s = (2f64.powi(46) * 2f64.powf(-q as f64 * t)).floor() * 2f64.powi(-46);
        }
        let mut rows: Vec<usize> = (0..p).collect();
        let mut perm: Vec<usize> = (0..p).collect();
        for v in [&mut rows, &mut perm] {
            for i in (1..p).rev() {
                v.swap(i, rng.random_range(0..=i));
            }
        }
        let d1: Vec<f64> = (0..n).map(|_| sign(&mut rng)).collect();
        let d2: Vec<f64> = (0..p).map(|_| sign(&mut rng)).collect();
        let j = Mat::from_fn(n, p, |i, k| {
            let mut s = 0.0;
            for (jj, &sj) in sigma.iter().enumerate() {
                s += h(i, jj) * sj * h(rows[jj], perm[k]);
            }
            d1[i] * d2[k] * s
        });
        (j, (p * n) as f64 * 2f64.powi(-2 * q))
    }

    fn frob2(j: &Mat<f64>) -> f64 {
        let n = j.norm_l2();
        n * n
    }

    #[test]
    fn f64_regime_known_spectrum() {
        let sigma = log_spaced(40, 1e-3);
        let j = householder_j(&sigma, 70, 4, 11);
        let lambda = sigma[39] * sigma[39];
        let svd = sigma_min(&j).powi(2);
        assert!(
            (svd / lambda - 1.0).abs() < 1e-8,
            "construction: {svd:e} vs {lambda:e}"
        );
        let c = certify_lambda_min(j.as_ref(), 0.0, svd);
        let lower = c.lower.expect("certified");
        assert_eq!(c.arithmetic, Some(F64));
        assert!(
            lower <= lambda.min(svd) * (1.0 - 1e-8),
            "{lower:e} vs {lambda:e}"
        );
        assert!(lower >= 0.5 * lambda, "within 2×: {lower:e} vs {lambda:e}");
        assert!(c.reason.is_none());
    }

    /// σ_min/σ_max = 1e-9: f64's Gram cannot resolve λ_min = 1e-18 (its floor is ~1e-14·‖J̃‖_F²),
    /// double-double can.
    #[test]
    fn double_double_regime_known_spectrum() {
        let sigma = log_spaced(40, 1e-9);
        let j = householder_j(&sigma, 70, 4, 12);
        let lambda = sigma[39] * sigma[39];
        let svd = sigma_min(&j).powi(2);
        assert!(
            (svd / lambda - 1.0).abs() < 1e-4,
            "construction: {svd:e} vs {lambda:e}"
        );
        let c = certify_lambda_min(j.as_ref(), 0.0, svd);
        let lower = c.lower.expect("certified");
        assert_eq!(c.arithmetic, Some(DoubleDouble));
        assert!(
            lower <= lambda.min(svd) * (1.0 - 1e-4),
            "{lower:e} vs {lambda:e}"
        );
        assert!(lower >= 0.5 * lambda, "within 2×: {lower:e} vs {lambda:e}");
        assert_eq!(
            certify_at(j.as_ref(), 0.5 * lambda, F64),
            None,
            "f64 resolves it?"
        );
    }

    /// Exactly known λ_min, estimates 1×, 1.5× and 3× the truth, in both regimes: the bound
    /// never exceeds λ_min and stays within 2× of it.
    #[test]
    fn estimates_above_the_truth_never_give_a_bound_above_it() {
        for (q, arith) in [(10, F64), (30, DoubleDouble)] {
            for seed in 0..3 {
                let (j, lambda) = hadamard_j(32, 64, q, seed);
                for factor in [1.0, 1.5, 3.0] {
                    let c = certify_lambda_min(j.as_ref(), 0.0, factor * lambda);
                    let lower = c.lower.unwrap_or_else(|| panic!("{:?}", c.reason));
                    assert_eq!(c.arithmetic, Some(arith), "q = {q}, {factor}×");
                    assert!(
                        lower <= lambda,
                        "q = {q}, {factor}×: {lower:e} > {lambda:e}"
                    );
                    assert!(lower >= 0.5 * lambda, "q = {q}, {factor}×: {lower:e}");
                }
            }
        }
    }

    /// G with known λ_min = λ: certifying at s' = 1.01·λ fails in both arithmetics (G − s'I
    /// is indefinite), at 0.99·λ it proves a bound in [0.98λ, λ].
    #[test]
    fn a_shift_just_above_lambda_min_fails_and_just_below_succeeds() {
        let (j, lambda) = hadamard_j(32, 64, 10, 5);
        for arith in [F64, DoubleDouble] {
            assert_eq!(
                certify_at(j.as_ref(), 1.01 * lambda, arith),
                None,
                "{arith:?}"
            );
            let s = certify_at(j.as_ref(), 0.99 * lambda, arith).expect("0.99λ");
            assert!(s <= lambda && s >= 0.98 * lambda, "{arith:?}: {s:e}");
        }
        let (j, lambda) = hadamard_j(32, 64, 30, 6);
        assert_eq!(certify_at(j.as_ref(), 1.01 * lambda, DoubleDouble), None);
        let s = certify_at(j.as_ref(), 0.99 * lambda, DoubleDouble).expect("0.99λ");
        assert!(s <= lambda && s >= 0.98 * lambda, "{s:e}");
        assert_eq!(certify_at(j.as_ref(), 0.99 * lambda, F64), None);
    }

    /// Shifts above λ_min by less than the rounding errors: the factorisation sometimes completes
    /// there (rounding made G̃ − s'I numerically definite), and then only the error budget keeps
    /// the bound at or below λ_min. One row (λ_min = ‖x‖², known exactly as an expansion; the
    /// Gram's rounding dominates) and a 32 × 32 exact-spectrum J (the Cholesky's weighs as much).
    #[test]
    fn shifts_within_rounding_above_lambda_min_never_overshoot() {
        let mut completed_above = [0; 2];
        for seed in 0..8 {
            let mut rng = StdRng::seed_from_u64(200 + seed);
            let row = Mat::from_fn(1, 1024, |_, _| StandardNormal.sample(&mut rng));
            let mut norm2 = Expansion::new();
            for k in 0..1024 {
                norm2.add_product(row[(0, k)], row[(0, k)]);
            }
            let (square, lambda) = hadamard_j(32, 32, 6, 100 + seed);
            for (a, j) in [row, square].into_iter().enumerate() {
                let lambda = if a == 0 { norm2.value() } else { lambda };
                // s ≤ λ_min, decided exactly.
                let at_most = |s: f64| {
                    if a == 0 {
                        let mut d = norm2.clone();
                        d.add(-s);
                        d.value() >= 0.0
                    } else {
                        s <= lambda
                    }
                };
                for arith in [F64, DoubleDouble] {
                    let noise = match arith {
                        F64 => UNIT,
                        DoubleDouble => U_DD,
                    } * frob2(&j);
                    for t in [0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0] {
                        let shift = lambda + t * noise;
                        if let Some(s) = certify_at(j.as_ref(), shift, arith) {
                            assert!(at_most(s), "{arith:?} case {a} t={t}: {s:e} > {lambda:e}");
                            if shift > lambda {
                                completed_above[a] += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(
            completed_above.iter().all(|&c| c > 0),
            "no factorisation completed above λ_min: {completed_above:?}"
        );
    }

    /// Duplicated rows, and an exact product of integer matrices of rank 12 < 20: no bound at any
    /// estimate, from far above f64's floor to below double-double's.
    #[test]
    fn exactly_singular_jacobians_are_refused() {
        let mut rng = StdRng::seed_from_u64(7);
        let mut dup = Mat::from_fn(20, 50, |_, _| StandardNormal.sample(&mut rng));
        for k in 0..50 {
            dup[(7, k)] = dup[(3, k)];
        }
        let a = Mat::from_fn(20, 12, |_, _| rng.random_range(-8i32..=8) as f64);
        let b = Mat::from_fn(12, 50, |_, _| rng.random_range(-8i32..=8) as f64);
        let product = &a * &b;
        for j in [dup, product] {
            let f2 = frob2(&j);
            let svd = sigma_min(&j).powi(2);
            for est in [1e-2, 1e-6, 1e-12, 1e-18, 1e-24, 1e-27, 1e-28, 1e-31]
                .map(|r| r * f2)
                .into_iter()
                .chain(Some(svd).filter(|&s| s > 0.0))
            {
                let c = certify_lambda_min(j.as_ref(), 0.0, est);
                assert_eq!(c.lower, None, "estimate {est:e}: {c:?}");
                assert!(c.reason.is_some() && c.arithmetic.is_none());
            }
        }
    }

    #[test]
    fn jacobian_error_enters_through_weyl() {
        let (j, lambda) = hadamard_j(32, 64, 10, 8);
        let s0 = certify_lambda_min(j.as_ref(), 0.0, lambda)
            .lower
            .expect("certified");
        // An error bound above σ_min(J̃) = √λ: J itself may be singular.
        let big = 1.1 * lambda.sqrt();
        let c = certify_lambda_min(j.as_ref(), big, lambda);
        assert_eq!(c.lower, None);
        let reason = c.reason.unwrap();
        assert!(
            reason.contains(&format!("{big:.3e}")) && reason.contains("√s"),
            "{reason}"
        );
        // Small ones lower the bound to (√s − e)².
        for e in [1e-3 * s0.sqrt(), 0.1 * s0.sqrt(), 0.9 * s0.sqrt()] {
            let c = certify_lambda_min(j.as_ref(), e, lambda);
            let lower = c.lower.expect("certified");
            let expected = (s0.sqrt() - e).powi(2);
            assert!(lower <= expected, "{lower:e} > {expected:e}");
            assert!(
                lower >= expected * (1.0 - 1e-12),
                "{lower:e} ≪ {expected:e}"
            );
        }
    }

    /// Multiplying J̃ by 2^t multiplies the bound by 2^2t exactly, far from 1 in both directions
    /// (entries of 2^500 would overflow the Gram without the scaling).
    #[test]
    fn scaling_by_powers_of_two_is_exact() {
        let (j, lambda) = hadamard_j(16, 32, 8, 9);
        let base = certify_lambda_min(j.as_ref(), 0.0, lambda).lower.unwrap();
        for t in [-500, -250, 250, 500] {
            let jt = Mat::from_fn(16, 32, |i, k| j[(i, k)] * 2f64.powi(t));
            let c = certify_lambda_min(jt.as_ref(), 0.0, lambda * 2f64.powi(2 * t));
            assert_eq!(c.lower, Some(base * 2f64.powi(2 * t)), "t = {t}: {c:?}");
        }
    }

    #[test]
    fn plain_refusals() {
        let mut rng = StdRng::seed_from_u64(10);
        let wide = Mat::from_fn(6, 5, |_, _| StandardNormal.sample(&mut rng));
        let reason = certify_lambda_min(wide.as_ref(), 0.0, 1.0).reason.unwrap();
        assert!(reason.contains("nm = 6 > p = 5"), "{reason}");
        let j = Mat::from_fn(3, 5, |i, k| (i * 5 + k) as f64 + (i == k) as u8 as f64);
        for est in [0.0, -1.0, f64::NAN] {
            let c = certify_lambda_min(j.as_ref(), 0.0, est);
            assert!(c.lower.is_none() && c.reason.unwrap().contains("estimate"));
        }
        let c = certify_lambda_min(j.as_ref(), f64::NAN, 1.0);
        assert!(c.lower.is_none() && c.reason.unwrap().contains("error bound"));
        let mut bad = j.clone();
        bad[(1, 2)] = f64::INFINITY;
        assert!(certify_lambda_min(bad.as_ref(), 0.0, 1.0).lower.is_none());
        let zero = Mat::<f64>::zeros(3, 5);
        assert!(certify_lambda_min(zero.as_ref(), 0.0, 1.0).lower.is_none());
        // A reason a user can read when the estimate is far too high.
        let (j, lambda) = hadamard_j(8, 16, 3, 1);
        let reason = certify_lambda_min(j.as_ref(), 0.0, 100.0 * lambda)
            .reason
            .unwrap();
        assert!(
            reason.starts_with("J̃ J̃ᵀ is not positive definite to within rounding")
                && reason.contains("failed at every shift"),
            "{reason}"
        );
    }

    /// Rows of very different sizes, n odd and not a multiple of the kernel's 8 lanes.
    fn test_jacobian(n: usize, p: usize, seed: u64) -> Mat<f64> {
        let mut rng = StdRng::seed_from_u64(seed);
        Mat::from_fn(n, p, |i, _| {
            let g: f64 = StandardNormal.sample(&mut rng);
            g * 2f64.powi((i % 5) as i32 - 2) / 3.0
        })
    }

    /// |x| for an exact expansion.
    fn size(e: &Expansion) -> f64 {
        e.value().abs()
    }

    /// The exact Gram entry (scaled J̃) as an expansion.
    fn exact_gram(sc: &Scaled, i: usize, j: usize) -> Expansion {
        let mut e = Expansion::new();
        for col in sc.data.chunks_exact(sc.n_pad) {
            e.add_product(col[i], col[j]);
        }
        e
    }

    fn abs_gram(sc: &Scaled, i: usize, j: usize) -> f64 {
        sc.data
            .chunks_exact(sc.n_pad)
            .map(|c| (c[i] * c[j]).abs())
            .sum()
    }

    /// Each term of the f64 budget bounds the error it stands for, measured exactly: the
    /// Gram's (entrywise against γ_p|J̃||J̃|ᵀ, and in Frobenius norm), the shift's, and the
    /// Cholesky factorisation's (ΔB = LLᵀ − B entrywise against γ_{n+1}|L||L|ᵀ, and in norm).
    #[test]
    fn f64_budget_terms_bound_the_measured_errors() {
        let (n, p) = (13, 300);
        let j = test_jacobian(n, p, 13);
        let sc = Scaled::new(j.as_ref()).unwrap();
        let gram = F64Gram::new(&sc);
        let gp = gamma(p, UNIT);
        let mut gram_f2 = 0.0;
        for jj in 0..n {
            for i in jj..n {
                let mut e = exact_gram(&sc, i, jj);
                e.add(-gram.g[jj * n + i]);
                let err = size(&e);
                assert!(err <= gp * abs_gram(&sc, i, jj), "G̃ ({i}, {jj})");
                gram_f2 += if i == jj { 1.0 } else { 2.0 } * err * err;
            }
        }
        let shift = 0.3 * sigma_min(&sc.mat().to_owned()).powi(2) + 1e-3 / 3.0;
        let b = gram.shifted(shift);
        let diag: Vec<f64> = (0..n).map(|i| b[i * n + i]).collect();
        let mut l = b.clone();
        cholesky_f64(&mut l, n).expect("positive definite");
        let budget = f64_budget(gram.term, &diag, n, p);
        assert!(budget.underflow > 0.0 && budget.underflow < 1e-290);
        assert!(
            gram_f2 > 0.0 && gram_f2.sqrt() <= budget.gram,
            "{gram_f2:e}"
        );
        let mut shift_err: f64 = 0.0;
        for i in 0..n {
            let mut e = Expansion::new();
            for t in [b[i * n + i], -gram.g[i * n + i], shift] {
                e.add(t);
            }
            shift_err = shift_err.max(size(&e));
        }
        assert!(
            shift_err > 0.0 && shift_err <= budget.shift,
            "{shift_err:e}"
        );
        let g1 = gamma(n + 1, UNIT);
        let mut chol_f2 = 0.0;
        for jj in 0..n {
            for i in jj..n {
                let mut e = Expansion::new();
                let mut abs = 0.0;
                for k in 0..=jj {
                    e.add_product(l[k * n + i], l[k * n + jj]);
                    abs += (l[k * n + i] * l[k * n + jj]).abs();
                }
                e.add(-b[jj * n + i]);
                let err = size(&e);
                assert!(err <= g1 * abs, "ΔB ({i}, {jj}): {err:e} > {:e}", g1 * abs);
                chol_f2 += if i == jj { 1.0 } else { 2.0 } * err * err;
            }
        }
        assert!(
            chol_f2 > 0.0 && chol_f2.sqrt() <= budget.cholesky,
            "{chol_f2:e}"
        );
    }

    /// The same for double-double: the Gram's error against γ'_p|J̃||J̃|ᵀ and E_G, the shift's
    /// against E_D, and ΔB = LLᵀ − B (products of double-doubles expanded exactly) against E_C.
    #[test]
    fn double_double_budget_terms_bound_the_measured_errors() {
        let (n, p) = (13, 300);
        let j = test_jacobian(n, p, 14);
        let sc = Scaled::new(j.as_ref()).unwrap();
        let gram = DdGram::new(&sc);
        let gp = gamma(p, U_DD);
        let mut gram_f2 = 0.0;
        for jj in 0..n {
            for i in jj..n {
                let mut e = exact_gram(&sc, i, jj);
                let g = gram.at(i, jj);
                e.add(-g.hi);
                e.add(-g.lo);
                let err = size(&e);
                assert!(err <= gp * abs_gram(&sc, i, jj), "G̃ ({i}, {jj})");
                gram_f2 += if i == jj { 1.0 } else { 2.0 } * err * err;
            }
        }
        let shift = 0.3 * sigma_min(&sc.mat().to_owned()).powi(2) + 1e-3 / 3.0;
        let (bh, bl) = gram.shifted(shift);
        let at = |h: &[f64], l: &[f64], i: usize, j: usize| Dd {
            hi: h[j * n + i],
            lo: l[j * n + i],
        };
        let bdiag: Vec<Dd> = (0..n).map(|i| at(&bh, &bl, i, i)).collect();
        let gdiag: Vec<Dd> = (0..n).map(|i| gram.at(i, i)).collect();
        let (mut lh, mut ll) = (bh.clone(), bl.clone());
        let eps = cholesky_dd(&mut lh, &mut ll, n).expect("positive definite");
        // ε includes the product by the reciprocal, so it is at least U.
        assert!((U_DD..1e3 * U_DD).contains(&eps), "ε = {eps:e}");
        let budget = dd_budget(gram.term, &gdiag, &bdiag, shift, eps, p);
        assert!(
            gram_f2 > 0.0 && gram_f2.sqrt() <= budget.gram,
            "{gram_f2:e}"
        );
        let mut shift_err: f64 = 0.0;
        for i in 0..n {
            let mut e = Expansion::new();
            for t in [bdiag[i].hi, bdiag[i].lo, -gdiag[i].hi, -gdiag[i].lo, shift] {
                e.add(t);
            }
            shift_err = shift_err.max(size(&e));
        }
        assert!(
            shift_err > 0.0 && shift_err <= budget.shift,
            "{shift_err:e}"
        );
        let mut chol_f2 = 0.0;
        for jj in 0..n {
            for i in jj..n {
                let mut e = Expansion::new();
                for k in 0..=jj {
                    let (a, b) = (at(&lh, &ll, i, k), at(&lh, &ll, jj, k));
                    for (x, y) in [(a.hi, b.hi), (a.hi, b.lo), (a.lo, b.hi), (a.lo, b.lo)] {
                        e.add_product(x, y);
                    }
                }
                let b = at(&bh, &bl, i, jj);
                e.add(-b.hi);
                e.add(-b.lo);
                let err = size(&e);
                chol_f2 += if i == jj { 1.0 } else { 2.0 } * err * err;
            }
        }
        assert!(
            chol_f2 > 0.0 && chol_f2.sqrt() <= budget.cholesky,
            "{chol_f2:e}"
        );
    }

    /// The double-double reciprocal and square root are accurate to a few u², and the residual
    /// bounds ρ, τ hold, checked exactly, both for them and for plain f64 approximations (whose
    /// residuals, ~u, dwarf the terms for the residuals' own evaluation).
    #[test]
    fn double_double_reciprocal_and_square_root() {
        let mut rng = StdRng::seed_from_u64(15);
        let exact_residual = |a: Dd, b: Dd, minus: Dd| {
            let mut e = Expansion::new();
            for (x, y) in [(a.hi, b.hi), (a.hi, b.lo), (a.lo, b.hi), (a.lo, b.lo)] {
                e.add_product(x, y);
            }
            e.add(-minus.hi);
            e.add(-minus.lo);
            size(&e)
        };
        for _ in 0..2000 {
            let hi = rng.random_range(0.5..2.0) * 2f64.powi(rng.random_range(-400..400));
            let x = Dd::from_f64(hi) + Dd::from_f64(rng.random_range(-1.0..1.0) * UNIT * hi);
            let (inv, rho) = dd_recip(x);
            assert!(rho < 64.0 * U_DD, "ρ = {rho:e}");
            assert!(exact_residual(x, inv, Dd::ONE) <= rho);
            let rough = Dd::from_f64(1.0 / x.hi);
            let rho = recip_residual(x, rough);
            let r = exact_residual(x, rough, Dd::ONE);
            assert!(r > 1e3 * U_DD && r <= rho, "{r:e} vs ρ = {rho:e}");
            let (l, tau) = dd_sqrt(x);
            assert!(tau < 64.0 * U_DD, "τ = {tau:e}");
            let c = x.hi * (1.0 - 2.0 * UNIT);
            assert!(exact_residual(l, l, x) <= tau * c, "τ");
            let rough = Dd::from_f64(x.hi.sqrt());
            let tau = sqrt_residual(x, rough);
            let r = exact_residual(rough, rough, x);
            assert!(r > 1e3 * U_DD * c && r <= tau * c, "{r:e} vs τ = {tau:e}");
        }
    }

    /// nm = 500, p = 1300 in both regimes; prints the times.
    #[test]
    #[ignore = "large (nm = 500, p = 1300): run with --ignored --nocapture for the timings"]
    fn paper_size() {
        for (smallest, arith) in [(1e-3, F64), (1e-9, DoubleDouble)] {
            let sigma = log_spaced(500, smallest);
            let j = householder_j(&sigma, 1300, 4, 21);
            let lambda = sigma[499] * sigma[499];
            let start = std::time::Instant::now();
            let c = certify_lambda_min(j.as_ref(), 0.0, lambda);
            let secs = start.elapsed().as_secs_f64();
            let lower = c.lower.unwrap_or_else(|| panic!("{:?}", c.reason));
            println!("{arith:?}: {secs:.2} s, lower/λ = {:.6}", lower / lambda);
            assert_eq!(c.arithmetic, Some(arith));
            assert!(lower <= lambda * (1.0 - 1e-3) && lower >= 0.5 * lambda);
            if arith == DoubleDouble {
                let sc = Scaled::new(j.as_ref()).unwrap();
                let start = std::time::Instant::now();
                let gram = DdGram::new(&sc);
                let t_gram = start.elapsed().as_secs_f64();
                let start = std::time::Instant::now();
                let out = gram.attempt(&sc, sc.down_to_scale(0.9 * lambda));
                let t_chol = start.elapsed().as_secs_f64();
                assert!(matches!(out, Outcome::Proven { .. }));
                println!("  Dd Gram {t_gram:.2} s, one shifted Dd Cholesky {t_chol:.2} s");
            } else {
                let sc = Scaled::new(j.as_ref()).unwrap();
                let start = std::time::Instant::now();
                let gram = F64Gram::new(&sc);
                let t_gram = start.elapsed().as_secs_f64();
                let start = std::time::Instant::now();
                let out = gram.attempt(&sc, sc.down_to_scale(0.9 * lambda));
                let t_chol = start.elapsed().as_secs_f64();
                assert!(matches!(out, Outcome::Proven { .. }));
                println!("  f64 Gram {t_gram:.3} s, one shifted f64 Cholesky {t_chol:.3} s");
            }
        }
    }
}
