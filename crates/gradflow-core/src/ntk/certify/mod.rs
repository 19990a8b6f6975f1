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
//!    Dd: each entry is computed with Dd additions, which only satisfy |fl(x + y) − (x + y)| ≤
//!    U(|x| + |y|). *Tree lemma:* in an evaluation tree whose leaves are exact or carry a
//!    relative error ≤ U, whose inner nodes are such additions, and whose leaves sit at depth
//!    ≤ D (a leaf's own rounding counted), the result is within ((1+U)^D − 1)·Σ|leaves| ≤
//!    γ'_D·Σ|leaves| of the exact one (induction: a node of depth d over leaves of total size A
//!    is computed within ((1+U)^d − 1)A and is at most (1+U)^d·A in size). The p products
//!    x_k = J̃_ik·J̃_jk are taken in blocks of q' ≤ q = [`GRAM_BLOCK`] consecutive k
//!    (q ≤ 2¹⁰), each summed in f64 as follows, in this order for every entry on every path.
//!    (a) *Magnitude.* Ŝ = Σ|J̃_ik|·|J̃_jk| by fma, in any order; as the terms are ≥ 0, each
//!    rounding loses at most a factor (1 − u), so Σ|x| ≤ (1 − u)^(−q)·Ŝ and
//!    Ŝ ≤ (1 + u)^q·Σ|x| (underflow: step 4). y = fl(Ŝ·m), m = 1 + 2⁻²⁰, and
//!    σ = max(4·2^⌊log₂ y⌋, 2⁻¹⁰⁰⁰), a power of two (2^⌊log₂ y⌋ read as 0 for subnormal y).
//!    Then σ > 2y ≥ 2m(1 − u)Ŝ, so Σ|x| ≤ σ/(2m(1 − u)^(q+1)) ≤ σ/2 − 2⁻²²σ (if y is
//!    subnormal, Σ|x| < 2⁻¹⁰²¹ ≪ σ/2), and unless σ = 2⁻¹⁰⁰⁰, σ ≤ 4y ≤ 4(1 + 2⁻¹⁹)·Σ|x|.
//!    (b) *Pinned sum.* T_0 = 1.5σ, T_k = fma(J̃_ik, J̃_jk, T_{k−1}) = fl(T_{k−1} + x_k),
//!    d_k = fl(T_k − T_{k−1}), t_k = fma(J̃_ik, J̃_jk, −d_k) = fl(x_k − d_k), c = Σ t_k
//!    (f64, left to right). By induction every T_k lies in [σ, 2σ] with
//!    |T_k − 1.5σ| ≤ Σ_{≤k}|x| + kuσ < σ/2: T_{k−1} + x_k lies strictly inside [σ, 2σ], whose
//!    floats are spaced 2uσ, so rounding it moves it by ≤ uσ and keeps it there. So d_k is
//!    exact (Sterbenz), |x_k − d_k| ≤ uσ, |t_k − (x_k − d_k)| ≤ u²σ, |t_k| ≤ uσ, and
//!    |c − Σt| ≤ γ_{q−1}·q·uσ (Higham §4.2). With s = fl(T_{q'} − 1.5σ) = Σd_k (exact,
//!    Sterbenz) and Σx = s + Σ(x_k − d_k): |s + c − Σ_block x| ≤ q²u²σ(1 + 2⁻³⁹) ≤
//!    (q²/16)(1 + 2⁻¹⁸)·U·Σ_block|x| (U = 64u²) unless σ = 2⁻¹⁰⁰⁰ (step 4).
//!    (c) *Between blocks.* The block's leaf is the Dd number two_sum(s, c), exactly s + c,
//!    added into the entry's running Dd sum (from 0): ⌈p/q⌉ leaves at depth D ≤ ⌈p/q⌉, of total
//!    size ≤ (1 + 2⁻⁸⁰)·Σ|x|. So |G̃ − G| ≤ β|J̃||J̃|ᵀ entrywise with
//!    β = γ'_{⌈p/q⌉}(1 + 2⁻⁴⁰) + (q²/16)(1 + 2⁻¹⁶)U (≈ (p/q + q²/16)·U,
//!    [`double_double_route::dd_gram_error_factor`]), and E_G = β‖J̃‖_F².
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
//!    p such errors (in the Dd Gram only t_k can be subnormal: T_k ≥ σ ≥ 2⁻¹⁰⁰⁰; Ŝ's only
//!    choose σ, and (a) holds with them, as σ ≥ 2⁻¹⁰⁰⁰ dwarfs q·2⁻¹⁰⁷⁴), one of ΔB at most 3n
//!    (inner products) plus 3 multiplied by l_jj (division), each grown by at most a factor 2
//!    on the way. A Dd Gram block with σ = 2⁻¹⁰⁰⁰ is within q²u²·2⁻⁹⁹⁹ instead, itself and
//!    through the Dd sum: ≤ p·2⁻¹⁰⁹⁵ per entry. So ‖·‖ of their sum is below
//!    E_U = n(p + n + √p + 2)·2⁻¹⁰⁷⁰ (with room: the Gram needs n·p·(2⁻¹⁰⁷⁴ + 2⁻¹⁰⁹⁵)). The pivot floor 2⁻⁹⁰⁰ keeps 1/l_jj ≤ 2⁴⁵⁰,
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
//! down to about (p/q + q²/16 + 2n)U‖J̃‖_F²; its Gram is n²p/2 products summed as in step 1
//! (five f64 operations each, vectorised over 8 columns and 4 rows, on rayon over tiles of 8
//! columns, a few blocks of columns of J̃ at a time so they stay in cache), and its Cholesky
//! n³/6 Dd multiply-subtracts, parallel over trailing columns.

use super::double_double::{Dd, U as UNIT, U_DD};
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef};
use rayon::prelude::*;

mod double_double_route;
mod f64_route;
mod rounding;
mod scaled;
#[cfg(test)]
mod tests;

use double_double_route::DdGram;
use f64_route::F64Gram;
use rounding::*;
use scaled::Scaled;

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
/// Columns per tile of the double-double Gram kernel (its SIMD lanes).
const LANES: usize = 8;
/// Products per f64 block of the double-double Gram's sums (q in step 1).
const GRAM_BLOCK: usize = 32;

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
