//! Tests of the certificate: hand-checkable matrices, exact rational arithmetic
//! ([`Expansion`]) as the independent route, and planted failures.

use super::double_double_route::*;
use super::f64_route::*;
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

/// The same for double-double: the Gram's error against β|J̃||J̃|ᵀ (step 1's blocked sums, β
/// ≪ γ'_p) and E_G, the shift's
/// against E_D, and ΔB = LLᵀ − B (products of double-doubles expanded exactly) against E_C.
#[test]
fn double_double_budget_terms_bound_the_measured_errors() {
    let (n, p) = (13, 300);
    let j = test_jacobian(n, p, 14);
    let sc = Scaled::new(j.as_ref()).unwrap();
    let gram = DdGram::new(&sc);
    let gp = dd_gram_error_factor(p);
    assert!(gp < gamma(p, U_DD) / 4.0, "β = {gp:e}");
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

/// The double-double Gram's kernel against exact sums on hard inputs, its portable build
/// against the FMA/AVX2 one, and a planted error caught: entries within β|J̃||J̃|ᵀ (plus step
/// 4's underflow allowance) for rows spanning 2⁴⁵⁰ in size, rows that cancel to exactly zero,
/// a row of zeros, p not a multiple of the block and n not a multiple of the lanes; and the
/// kernel without its compensation c exceeds β (so the check can fail).
#[test]
fn double_double_gram_kernel_on_hard_inputs() {
    let (n, p) = (11, 3 * GRAM_BLOCK + 7);
    let mut rng = StdRng::seed_from_u64(15);
    let mut j = Mat::from_fn(n, p, |i, _| {
        let g: f64 = StandardNormal.sample(&mut rng);
        g * 2f64.powi(-45 * i as i32)
    });
    for k in 0..p {
        // Row 3 = −row 2 in its first half (partial cancellation against row 2 exactly),
        // row 4 zero, row 5 alternating ±2⁻⁵ but for its last (zero) entry and row 6 all
        // ones, so their entry is an exact zero summed from 102 terms of one size.
        j[(3, k)] = if k < p / 2 { -j[(2, k)] } else { j[(3, k)] };
        j[(4, k)] = 0.0;
        j[(5, k)] = if k + 1 == p {
            0.0
        } else if k % 2 == 0 {
            pow2(-5)
        } else {
            -pow2(-5)
        };
        j[(6, k)] = 1.0;
    }
    let sc = Scaled::new(j.as_ref()).unwrap();
    let beta = dd_gram_error_factor(p);
    let allowance = p as f64 * (pow2(-1074) + pow2(-1095));
    let check = |hi: &[f64], lo: &[f64]| -> (usize, f64) {
        let (mut violations, mut worst) = (0, 0.0f64);
        for jj in 0..n {
            for i in jj..n {
                let mut e = exact_gram(&sc, i, jj);
                e.add(-hi[jj * n + i]);
                e.add(-lo[jj * n + i]);
                let bound = beta * abs_gram(&sc, i, jj) + allowance;
                let err = size(&e);
                if err > bound {
                    violations += 1;
                }
                if bound > 0.0 {
                    worst = worst.max(err / bound);
                }
            }
        }
        (violations, worst)
    };
    let (hi, lo) = dd_gram(&sc);
    let (violations, worst) = check(&hi, &lo);
    assert_eq!(violations, 0, "worst error / bound {worst}");
    // The exactly cancelling entries are exactly zero.
    assert_eq!((hi[5 * n + 6], lo[5 * n + 6]), (0.0, 0.0));
    assert!(hi[4 * n + 4] == 0.0 && hi[2 * n + 3] != 0.0);
    let (phi, plo) = dd_gram_with(&sc, dd_gram_tile_imp, true);
    assert!(phi == hi && plo == lo, "portable and FMA builds differ");
    let (bhi, blo) = dd_gram_with(&sc, dd_gram_tile, false);
    let (violations, worst) = check(&bhi, &blo);
    assert!(
        violations > 0 && worst > 1e6,
        "the uncompensated kernel stayed within β: {violations}, {worst}"
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
