//! Tests of the activation layer's control slot (`ActivationLayer::control`), through which the
//! flow solver freezes each pre-activation's polynomial piece, pins entries to a kink with a
//! chosen slope, evaluates one-sample sub-batches, records pre-activations and cotangents, and
//! seeds reverse passes.
//!
//! Why here: the solver's order of accuracy rests on the frozen field being the *polynomial
//! continuation* of each piece (smooth across a step, even where z has left the piece), and its
//! sliding rests on a pinned entry's derivative being exactly the chosen slope. Both are checked
//! against independent computations: the generic finite-difference layer checker of
//! `tests/common` (vjp / jvp / adjointness against central differences of `forward`) and
//! polynomials evaluated here from the activation's coefficients. Without a control the layer
//! must behave exactly as `Activation::value` / `Activation::derivative`.

use crate::common;

use common::{check_layer, draw_point, random_batch, rng};
use gradflow::activation::{Activation, PiecewisePolynomial};
use gradflow::layers::activation::{ControlState, Pin, PINNED};
use gradflow::layers::{ActivationLayer, Layer};
use gradflow::Batch;

/// A continuous piecewise polynomial with genuinely curved pieces (so a continuation differs
/// from the function itself): 0.1 z − 0.325 on (−∞, −0.5], z + 0.5 z² on (−0.5, 0.4],
/// −0.256 + 2 z − z³ on (0.4, ∞).
fn curved() -> Activation {
    Activation::Piecewise(
        PiecewisePolynomial::new(
            vec![-0.5, 0.4],
            vec![
                vec![-0.325, 0.1],
                vec![0.0, 1.0, 0.5],
                vec![-0.256, 2.0, 0.0, -1.0],
            ],
        )
        .expect("continuous"),
    )
}

fn poly(c: &[f64], z: f64) -> f64 {
    c.iter()
        .enumerate()
        .map(|(k, ck)| ck * z.powi(k as i32))
        .sum()
}

fn poly_d(c: &[f64], z: f64) -> f64 {
    c.iter()
        .enumerate()
        .skip(1)
        .map(|(k, ck)| k as f64 * ck * z.powi(k as i32 - 1))
        .sum()
}

/// The piece polynomial of `act` (independent of the library's piece code): (value, derivative)
/// of piece k at z; `a` is PReLU's slope.
fn piece(act: &Activation, k: usize, z: f64, a: f64) -> (f64, f64) {
    match act {
        Activation::Piecewise(p) => (poly(&p.coefficients[k], z), poly_d(&p.coefficients[k], z)),
        Activation::LeakyRelu { slope } => [(slope * z, *slope), (z, 1.0)][k],
        Activation::Prelu { .. } => [(a * z, a), (z, 1.0)][k],
        _ => unreachable!(),
    }
}

fn actual_piece(act: &Activation, z: f64) -> usize {
    act.kinks().iter().filter(|&&b| b < z).count()
}

/// A frozen pattern for the point (θ, x) that check_layer will draw: every third entry on a
/// piece other than the one z lies in, every fifth (offset 1) pinned at the first kink with
/// slope 0.37, the rest on their own piece.
fn pattern(act: &Activation, x: &Batch) -> (Vec<u16>, Vec<Pin>) {
    let npieces = act.kinks().len() + 1;
    let knot = act.kinks()[0];
    let mut pieces = Vec::new();
    let mut pins = Vec::new();
    for (e, &z) in x.as_slice().iter().enumerate() {
        let k = actual_piece(act, z);
        if e % 5 == 1 {
            pieces.push(PINNED);
            pins.push(Pin {
                entry: e,
                knot,
                value_at_knot: piece(act, 0, knot, 0.25).0,
                slope: 0.37,
            });
        } else if e % 3 == 0 {
            pieces.push(((k + 1) % npieces) as u16);
        } else {
            pieces.push(k as u16);
        }
    }
    (pieces, pins)
}

fn install(layer: &ActivationLayer, pieces: Vec<u16>, pins: Vec<Pin>) {
    *layer.control.lock() = Some(ControlState {
        pieces,
        pins,
        ..Default::default()
    });
}

/// With a frozen pattern (some entries on the wrong piece, some pinned) the layer still passes
/// the finite-difference checker: the frozen field is smooth, the continuation of each piece.
/// Its values are those polynomials (evaluated here from the coefficients), a pinned entry's
/// value is σ(b) + s (z − b) and its derivative is exactly s.
#[test]
fn frozen_pattern_passes_fd_checks_and_is_the_piece_continuation() {
    let (dim, n) = (4, 5);
    for (act, seed) in [
        (curved(), 101u64),
        (Activation::leaky_relu(), 102),
        (Activation::Prelu { init: 0.25 }, 103),
    ] {
        let layer = ActivationLayer::new(act.clone(), dim);
        let (theta, x, _) = draw_point(&layer, n, seed);
        let a = theta.first().copied().unwrap_or(0.0);
        let (pieces, pins) = pattern(&act, &x);
        let wrong = (0..dim * n)
            .filter(|&e| {
                pieces[e] != PINNED && pieces[e] as usize != actual_piece(&act, x.as_slice()[e])
            })
            .count();
        assert!(wrong >= 3 && pins.len() >= 3, "{act}: pattern too tame");
        install(&layer, pieces.clone(), pins.clone());

        let report = check_layer(&layer, n, seed);
        println!(
            "{act}: FD check with {wrong} entries off their piece, {} pinned: max vjp err {:.2e}, \
             jvp err {:.2e}, adjoint {:.2e}",
            pins.len(),
            report.max_vjp_err,
            report.max_jvp_err,
            report.adjoint_err
        );

        // Values and derivatives against the polynomials.
        let (y, tape) = layer.forward(&theta, &x);
        let ones = Batch::from_vec(dim, n, vec![1.0; dim * n]);
        let dy = layer.jvp(&theta, &x, &tape, &ones, &vec![0.0; theta.len()]);
        for (e, &pe) in pieces.iter().enumerate() {
            let z = x.as_slice()[e];
            let (v, d) = if pe == PINNED {
                let p = pins.iter().find(|p| p.entry == e).unwrap();
                (p.value_at_knot + p.slope * (z - p.knot), p.slope)
            } else {
                piece(&act, pe as usize, z, a)
            };
            assert!(
                (y.as_slice()[e] - v).abs() <= 1e-14 * (1.0 + v.abs()),
                "{act}: entry {e} value {} expected {v}",
                y.as_slice()[e]
            );
            assert!(
                (dy.as_slice()[e] - d).abs() <= 1e-14 * (1.0 + d.abs()),
                "{act}: entry {e} derivative {} expected {d}",
                dy.as_slice()[e]
            );
            if pe == PINNED {
                assert_eq!(dy.as_slice()[e], 0.37, "{act}: pinned slope");
            }
        }
        *layer.control.lock() = None;
    }
}

/// Without a control the layer is σ itself: values and derivatives as `Activation::value` /
/// `Activation::derivative`, bit for bit before a control is installed and after it is removed.
#[test]
fn uncontrolled_layer_is_unchanged() {
    let (dim, n) = (3, 6);
    for (act, seed) in [
        (curved(), 201u64),
        (Activation::leaky_relu(), 202),
        (Activation::Prelu { init: 0.25 }, 203),
        (Activation::Sigmoid, 204),
    ] {
        let layer = ActivationLayer::new(act.clone(), dim);
        let (theta, x, _) = draw_point(&layer, n, seed);
        let a = theta.first().copied().unwrap_or(0.0);
        let mut r = rng(seed);
        let y_bar = random_batch(&mut r, dim, n);
        let run = |layer: &ActivationLayer| {
            let (y, tape) = layer.forward(&theta, &x);
            let mut tb = vec![0.0; theta.len()];
            let xb = layer.vjp(&theta, &x, &tape, &y_bar, &mut tb);
            (y, xb, tb)
        };
        let (y0, xb0, tb0) = run(&layer);
        for e in 0..dim * n {
            let z = x.as_slice()[e];
            assert_eq!(y0.as_slice()[e], act.value(z, a), "{act}: value");
            assert_eq!(
                xb0.as_slice()[e],
                y_bar.as_slice()[e] * act.derivative(z, a),
                "{act}: derivative"
            );
        }
        // A control that freezes every entry on its own piece gives the same numbers ...
        let pieces: Vec<u16> = x
            .as_slice()
            .iter()
            .map(|&z| actual_piece(&act, z) as u16)
            .collect();
        install(&layer, pieces, vec![]);
        let (y1, xb1, tb1) = run(&layer);
        for (u, v) in y1.as_slice().iter().zip(y0.as_slice()) {
            assert!(
                (u - v).abs() <= 1e-15 * (1.0 + v.abs()),
                "{act}: own-piece value"
            );
        }
        for (u, v) in xb1.as_slice().iter().zip(xb0.as_slice()) {
            assert!(
                (u - v).abs() <= 1e-15 * (1.0 + v.abs()),
                "{act}: own-piece cotangent"
            );
        }
        for (u, v) in tb1.iter().zip(&tb0) {
            assert!(
                (u - v).abs() <= 1e-14 * (1.0 + v.abs()),
                "{act}: own-piece θ̄"
            );
        }
        // ... and once removed, everything is as before, bit for bit.
        *layer.control.lock() = None;
        let (y2, xb2, tb2) = run(&layer);
        assert_eq!(y2.as_slice(), y0.as_slice());
        assert_eq!(xb2.as_slice(), xb0.as_slice());
        assert_eq!(tb2, tb0);
    }
}

/// The solver's other duties of the slot: a one-sample sub-batch (`columns`) is evaluated with
/// that sample's frozen pieces; `record_z` copies the pre-activations in training order; the
/// reverse pass records ȳ at the `record` entries and adds the `seeds` into x̄.
#[test]
fn columns_record_and_seeds() {
    let (dim, n) = (4, 5);
    let act = curved();
    let layer = ActivationLayer::new(act.clone(), dim);
    let (theta, x, _) = draw_point(&layer, n, 301);
    let (pieces, pins) = pattern(&act, &x);
    install(&layer, pieces, pins);
    let (y_full, _) = layer.forward(&theta, &x);
    for i in 0..n {
        {
            let mut g = layer.control.lock();
            let st = g.as_mut().unwrap();
            st.columns = Some(vec![i]);
            st.record_z = true;
            st.z.clear();
        }
        let xi = Batch::from_vec(dim, 1, x.col(i).to_vec());
        let (yi, _) = layer.forward(&theta, &xi);
        assert_eq!(yi.col(0), y_full.col(i), "sample {i} as a sub-batch");
        let g = layer.control.lock();
        let st = g.as_ref().unwrap();
        assert_eq!(
            &st.z[i * dim..(i + 1) * dim],
            x.col(i),
            "recorded z of sample {i}"
        );
    }
    // Record and seed in a full-batch reverse pass.
    let mut r = rng(302);
    let y_bar = random_batch(&mut r, dim, n);
    let (_, tape) = {
        let mut g = layer.control.lock();
        let st = g.as_mut().unwrap();
        st.columns = None;
        drop(g);
        layer.forward(&theta, &x)
    };
    let plain_xb = layer.vjp(&theta, &x, &tape, &y_bar, &mut []);
    let (rec, seed) = (vec![2usize, 7, 13], vec![(7usize, 1.0), (18usize, -2.5)]);
    {
        let mut g = layer.control.lock();
        let st = g.as_mut().unwrap();
        st.record = rec.clone();
        st.seeds = seed.clone();
    }
    let xb = layer.vjp(&theta, &x, &tape, &y_bar, &mut []);
    let g = layer.control.lock();
    let st = g.as_ref().unwrap();
    for (k, &e) in rec.iter().enumerate() {
        assert_eq!(
            st.recorded[k],
            y_bar.as_slice()[e],
            "recorded ȳ at entry {e}"
        );
    }
    for e in 0..dim * n {
        let add: f64 = seed.iter().filter(|s| s.0 == e).map(|s| s.1).sum();
        assert_eq!(
            xb.as_slice()[e],
            plain_xb.as_slice()[e] + add,
            "x̄ at entry {e}"
        );
    }
}
