//! Activations: values against closed forms, derivatives against finite differences, the
//! piecewise-polynomial validator, the Theorem 3.1 classifier, and sigmoid's piecewise-linear
//! approximations (Cor. 3.1.2).

use crate::common;

use common::rng;
use gradflow::activation::{Activation, ActivationClass, PiecewiseError, PiecewisePolynomial};
use rand::RngExt;

const H: f64 = 1e-6;

fn cubic_piecewise() -> PiecewisePolynomial {
    PiecewisePolynomial::new(
        vec![-1.0, 1.0],
        vec![
            vec![-0.1, 0.1],
            vec![0.1, 1.0, 0.5, -0.2],
            vec![-0.9, 2.6, -0.3],
        ],
    )
    .expect("continuous by construction")
}

/// The same function written out by hand.
fn cubic_by_hand(z: f64) -> f64 {
    if z <= -1.0 {
        -0.1 + 0.1 * z
    } else if z <= 1.0 {
        0.1 + z + 0.5 * z * z - 0.2 * z * z * z
    } else {
        -0.9 + 2.6 * z - 0.3 * z * z
    }
}

fn sig(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Random points in [−6, 6] at least 1e-3 away from every kink.
fn points_away_from(kinks: &[f64], count: usize, seed: u64) -> Vec<f64> {
    let mut r = rng(seed);
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let z: f64 = r.random_range(-6.0..6.0);
        if kinks.iter().all(|b| (z - b).abs() >= 1e-3) {
            out.push(z);
        }
    }
    out
}

/// (activation, slope passed as the PReLU parameter, closed form of σ(z)).
type ClosedForm = Box<dyn Fn(f64) -> f64>;

fn cases() -> Vec<(Activation, f64, ClosedForm)> {
    vec![
        (
            Activation::LeakyRelu { slope: 0.01 },
            0.0,
            Box::new(|z: f64| if z > 0.0 { z } else { 0.01 * z }),
        ),
        (
            Activation::LeakyRelu { slope: 0.2 },
            0.0,
            Box::new(|z: f64| z.max(0.2 * z)),
        ),
        (
            Activation::Prelu { init: 0.25 },
            -0.7,
            Box::new(|z: f64| if z > 0.0 { z } else { -0.7 * z }),
        ),
        (Activation::Relu, 0.0, Box::new(|z: f64| z.max(0.0))),
        (Activation::Sigmoid, 0.0, Box::new(sig)),
        (
            Activation::Piecewise(cubic_piecewise()),
            0.0,
            Box::new(cubic_by_hand),
        ),
    ]
}

#[test]
fn values_match_closed_forms() {
    for (i, (act, a, f)) in cases().into_iter().enumerate() {
        for z in points_away_from(&act.kinks(), 200, 10 + i as u64) {
            let v = act.value(z, a);
            assert!(
                (v - f(z)).abs() <= 1e-14 * (1.0 + f(z).abs()),
                "{act}: σ({z}) = {v}, closed form {}",
                f(z)
            );
        }
    }
}

#[test]
fn derivatives_match_finite_differences() {
    for (i, (act, a, f)) in cases().into_iter().enumerate() {
        for z in points_away_from(&act.kinks(), 200, 20 + i as u64) {
            let fd_closed = (f(z + H) - f(z - H)) / (2.0 * H);
            let fd_lib = (act.value(z + H, a) - act.value(z - H, a)) / (2.0 * H);
            let d = act.derivative(z, a);
            for fd in [fd_closed, fd_lib] {
                assert!(
                    (d - fd).abs() <= 1e-6 * fd.abs() + 1e-8,
                    "{act}: σ'({z}) = {d}, finite difference {fd}"
                );
            }
        }
    }
}

#[test]
fn prelu_slope_derivative_matches_finite_differences() {
    let act = Activation::Prelu { init: 0.25 };
    for z in points_away_from(&[0.0], 100, 30) {
        let a = 0.3;
        let fd = (act.value(z, a + H) - act.value(z, a - H)) / (2.0 * H);
        let got = act.slope_derivative(z);
        assert!((got - fd).abs() <= 1e-8, "∂σ/∂a at z = {z}: {got} vs {fd}");
        let want = if z > 0.0 { 0.0 } else { z };
        assert!((got - want).abs() < 1e-15);
    }
    // The others have no slope parameter.
    for act in [
        Activation::leaky_relu(),
        Activation::Relu,
        Activation::Sigmoid,
    ] {
        assert_eq!(act.slope_derivative(-1.5), 0.0);
        assert_eq!(act.num_params(), 0);
    }
    assert_eq!(act.num_params(), 1);
}

#[test]
fn derivative_at_a_kink_is_the_left_one() {
    // PyTorch's convention (documented in src/activation.rs): at z = b use the left piece.
    assert_eq!(
        Activation::LeakyRelu { slope: 0.2 }.derivative(0.0, 0.0),
        0.2
    );
    assert_eq!(Activation::Relu.derivative(0.0, 0.0), 0.0);
    assert_eq!(Activation::Prelu { init: 0.25 }.derivative(0.0, 0.4), 0.4);
    let p = cubic_piecewise();
    // Left of −1: slope 0.1; left of 1: 1 + z − 0.6 z² at z = 1 → 1.4.
    assert!((p.derivative(-1.0) - 0.1).abs() < 1e-15);
    assert!((p.derivative(1.0) - 1.4).abs() < 1e-14);
    assert_eq!(p.piece(-1.0), 0);
    assert_eq!(p.piece(-0.999), 1);
    assert_eq!(p.piece(1.0), 1);
    assert_eq!(p.piece(1.001), 2);
}

#[test]
fn kinks_are_reported() {
    assert_eq!(Activation::leaky_relu().kinks(), vec![0.0]);
    assert_eq!(Activation::Relu.kinks(), vec![0.0]);
    assert!(Activation::Sigmoid.kinks().is_empty());
    assert!(!Activation::Sigmoid.has_kinks());
    assert_eq!(
        Activation::Piecewise(cubic_piecewise()).kinks(),
        vec![-1.0, 1.0]
    );
}

#[test]
fn piecewise_rejects_discontinuity() {
    // Left piece gives −0.2 at −1, middle gives −0.2 + 0.05.
    let err = PiecewisePolynomial::new(
        vec![-1.0, 1.0],
        vec![
            vec![-0.1, 0.1],
            vec![0.15, 1.0, 0.5, -0.2],
            vec![-0.85, 2.6, -0.3],
        ],
    )
    .unwrap_err();
    match err {
        PiecewiseError::Discontinuous { at, left, right } => {
            assert_eq!(at, -1.0);
            assert!((left - -0.2).abs() < 1e-12);
            assert!((right - -0.15).abs() < 1e-12);
        }
        other => panic!("expected Discontinuous, got {other:?}"),
    }
    // A jump at the second breakpoint only.
    let err = PiecewisePolynomial::new(
        vec![0.0, 1.0],
        vec![vec![0.0, 1.0], vec![0.0, 1.0], vec![2.0]],
    )
    .unwrap_err();
    assert!(
        matches!(err, PiecewiseError::Discontinuous { at, .. } if at == 1.0),
        "{err:?}"
    );
    // A tiny jump well above 1e-9 relative is still rejected.
    assert!(PiecewisePolynomial::new(vec![0.0], vec![vec![0.0], vec![1e-6, 1.0]]).is_err());
}

#[test]
fn piecewise_rejects_wrong_piece_counts() {
    let err = PiecewisePolynomial::new(vec![-1.0, 1.0], vec![vec![0.0, 1.0], vec![0.0, 1.0]])
        .unwrap_err();
    assert_eq!(
        err,
        PiecewiseError::PieceCount {
            pieces: 3,
            breaks: 2,
            got: 2
        }
    );
    let err = PiecewisePolynomial::new(vec![], vec![vec![0.0, 1.0], vec![0.0, 1.0]]).unwrap_err();
    assert!(matches!(err, PiecewiseError::PieceCount { got: 2, .. }));
    assert!(PiecewisePolynomial::new(vec![0.0], vec![]).is_err());
}

#[test]
fn piecewise_rejects_other_malformed_definitions() {
    // Breakpoints not increasing.
    assert!(matches!(
        PiecewisePolynomial::new(vec![1.0, -1.0], vec![vec![1.0], vec![1.0], vec![1.0]]),
        Err(PiecewiseError::Breakpoints { index: 1 })
    ));
    // Repeated breakpoint.
    assert!(PiecewisePolynomial::new(vec![0.0, 0.0], vec![vec![1.0]; 3]).is_err());
    // Empty piece.
    assert!(matches!(
        PiecewisePolynomial::new(vec![0.0], vec![vec![], vec![0.0]]),
        Err(PiecewiseError::EmptyPiece { piece: 0 })
    ));
    // Non-finite coefficient / breakpoint.
    assert!(PiecewisePolynomial::new(vec![0.0], vec![vec![0.0, f64::NAN], vec![0.0]]).is_err());
    assert!(PiecewisePolynomial::new(vec![f64::INFINITY], vec![vec![0.0], vec![0.0]]).is_err());
    // A single polynomial (no breakpoints) is fine.
    let p = PiecewisePolynomial::new(vec![], vec![vec![1.0, 2.0, 3.0]]).unwrap();
    assert_eq!(p.value(2.0), 1.0 + 4.0 + 12.0);
    assert_eq!(p.derivative(2.0), 2.0 + 12.0);
}

#[test]
fn classification_matches_the_paper() {
    use ActivationClass::*;
    let relu_pw = PiecewisePolynomial::new(vec![0.0], vec![vec![0.0], vec![0.0, 1.0]]).unwrap();
    let relu_pw_padded =
        PiecewisePolynomial::new(vec![0.0], vec![vec![0.0, 0.0], vec![0.0, 1.0, 0.0]]).unwrap();
    // Zero on (−∞, −1], then z + 1: vanishes on a whole interval and is not ReLU.
    let shifted = PiecewisePolynomial::new(vec![-1.0], vec![vec![0.0], vec![1.0, 1.0]]).unwrap();
    let cases = [
        (Activation::LeakyRelu { slope: 0.01 }, Theorem31),
        (Activation::LeakyRelu { slope: 0.2 }, Theorem31),
        (Activation::LeakyRelu { slope: 0.0 }, Corollary311),
        (Activation::Prelu { init: 0.25 }, Theorem31),
        (Activation::Relu, Corollary311),
        (Activation::Sigmoid, Corollary312),
        (Activation::Piecewise(cubic_piecewise()), Theorem31),
        (Activation::Piecewise(relu_pw), Corollary311),
        (Activation::Piecewise(relu_pw_padded), Corollary311),
        (Activation::Piecewise(shifted), NotCovered),
    ];
    for (act, want) in cases {
        assert_eq!(act.classify(), want, "{act}");
    }
}

/// ReLU written with a redundant breakpoint (0 on (−∞, −1], 0 on (−1, 0], z on (0, ∞)) is the
/// same function as ReLU, so it should be covered by Corollary 3.1.1 like ReLU itself.
#[test]
fn relu_with_redundant_breakpoint_is_still_relu() {
    let p = PiecewisePolynomial::new(vec![-1.0, 0.0], vec![vec![0.0], vec![0.0], vec![0.0, 1.0]])
        .unwrap();
    for z in [-3.0, -1.0, -0.5, 0.0, 0.5, 2.0] {
        assert_eq!(p.value(z), z.max(0.0));
    }
    assert_eq!(
        Activation::Piecewise(p).classify(),
        ActivationClass::Corollary311
    );
}

/// Max |interp(z) − σ(z)| on a fine grid of [a, b].
fn max_error(p: &PiecewisePolynomial, a: f64, b: f64, points: usize) -> f64 {
    (0..=points)
        .map(|k| a + (b - a) * k as f64 / points as f64)
        .map(|z| (p.value(z) - sig(z)).abs())
        .fold(0.0, f64::max)
}

#[test]
fn sigmoid_interpolation_converges() {
    // max |σ''| = 1/(6√3) (at z = ±ln(2 + √3)); tail error outside [−8, 8] ≤ σ(−8).
    let max_d2 = 1.0 / (6.0 * 3f64.sqrt());
    let tail = sig(-8.0);
    let mut prev_inner = f64::INFINITY;
    let mut prev_total = f64::INFINITY;
    for k in [4usize, 8, 16, 32, 64, 128] {
        let p = PiecewisePolynomial::interpolate(sig, -8.0, 8.0, k).unwrap();
        p.validate()
            .expect("the interpolant is a valid continuous piecewise polynomial");
        assert_eq!(p.breakpoints.len(), k + 1);
        // Exact at the nodes.
        for j in 0..=k {
            let z = -8.0 + 16.0 * j as f64 / k as f64;
            assert!((p.value(z) - sig(z)).abs() < 1e-14);
        }
        let h = 16.0 / k as f64;
        let inner = max_error(&p, -8.0, 8.0, 64_000);
        let total = max_error(&p, -20.0, 20.0, 160_000);
        let bound = h * h / 8.0 * max_d2;
        assert!(
            inner <= bound * (1.0 + 1e-9),
            "k = {k}: error {inner} on [−8, 8] above h²/8·max|σ''| = {bound}"
        );
        assert!(total <= bound + tail + 1e-12, "k = {k}: {total}");
        assert!(total < prev_total, "k = {k}: the error must decrease");
        if k >= 16 {
            // Second-order convergence: doubling k divides the interior error by ~4.
            assert!(
                prev_inner / inner > 3.5,
                "k = {k}: ratio {}",
                prev_inner / inner
            );
        }
        prev_inner = inner;
        prev_total = total;
    }
}

#[test]
fn interpolated_sigmoid_is_classified_as_theorem31() {
    let p = PiecewisePolynomial::interpolate(sig, -8.0, 8.0, 16).unwrap();
    assert_eq!(
        Activation::Piecewise(p).classify(),
        ActivationClass::Theorem31
    );
}
