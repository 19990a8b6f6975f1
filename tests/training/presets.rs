//! The presets (parameter counts, tensor names, forward passes against hand-written networks,
//! loss gradients against finite differences) and gradient-descent training.

use crate::common;

use common::{min_kink_distance, random_batch, rng, uniform_vec, H, KINK_MARGIN};
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::{Graph, SparseMatrix};
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};
use gradflow::{Batch, Error};
use std::sync::Arc;

fn leaky() -> Activation {
    Activation::leaky_relu()
}

fn a_hat_on(x: &Batch, k: usize) -> Arc<SparseMatrix> {
    Arc::new(Graph::knn(x, k).unwrap().normalized_adjacency())
}

// ---------------------------------------------------------------- parameter counts and names

/// Σ_l (d_{l−1} + 1) d_l, written out here.
fn dnn_count(d: usize, hidden: &[usize], m: usize) -> usize {
    let mut widths = vec![d];
    widths.extend_from_slice(hidden);
    widths.push(m);
    let mut p = 0;
    for l in 1..widths.len() {
        p += (widths[l - 1] + 1) * widths[l];
    }
    p
}

#[test]
fn dnn_parameter_counts() {
    // The paper-scale numbers of docs/theory.md, 'Presets'.
    assert_eq!(presets::dnn(500, &[250, 250], 50, &leaky()).p(), 200_550);
    assert_eq!(presets::dnn(500, &[50, 50], 50, &leaky()).p(), 30_150);
    assert_eq!(presets::dnn(500, &[100, 100], 50, &leaky()).p(), 65_250);
    for (d, hidden, m) in [(3, vec![], 2), (4, vec![64, 64], 2), (7, vec![5, 9, 2], 3)] {
        let want = dnn_count(d, &hidden, m);
        assert_eq!(presets::dnn(d, &hidden, m, &leaky()).p(), want);
        assert_eq!(presets::dnn_param_count(d, &hidden, m, &leaky()), want);
        // One trainable slope per PReLU layer.
        let prelu = Activation::Prelu { init: 0.25 };
        assert_eq!(presets::dnn(d, &hidden, m, &prelu).p(), want + hidden.len());
        assert_eq!(
            presets::dnn_param_count(d, &hidden, m, &prelu),
            want + hidden.len()
        );
    }
}

#[test]
fn resnet_parameter_counts() {
    for depth in [8, 9, 16] {
        assert_eq!(
            presets::resnet(100, depth, 100, &leaky()).p(),
            (depth + 1) * 10_100
        );
    }
    for (d, depth, m) in [(3, 2, 5), (6, 1, 1), (4, 0, 2)] {
        assert_eq!(
            presets::resnet(d, depth, m, &leaky()).p(),
            depth * (d * d + d) + (d + 1) * m
        );
    }
}

#[test]
fn gcn_parameter_count_equals_dnn() {
    let x = random_batch(&mut rng(1), 3, 10);
    let a = a_hat_on(&x, 3);
    for (d, hidden, m) in [(3, vec![4, 4], 2), (3, vec![25], 5), (3, vec![], 1)] {
        assert_eq!(
            presets::gcn(a.clone(), d, &hidden, m, &leaky()).p(),
            dnn_count(d, &hidden, m)
        );
    }
}

#[test]
fn dnn_tensor_names_follow_nn_sequential() {
    let model = presets::dnn(6, &[5, 4, 3], 2, &leaky());
    let specs = model.param_specs();
    let got: Vec<(String, Vec<usize>)> = specs
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = vec![
        ("0.weight".into(), vec![5, 6]),
        ("0.bias".into(), vec![5]),
        ("2.weight".into(), vec![4, 5]),
        ("2.bias".into(), vec![4]),
        ("4.weight".into(), vec![3, 4]),
        ("4.bias".into(), vec![3]),
        ("6.weight".into(), vec![2, 3]),
        ("6.bias".into(), vec![2]),
    ];
    assert_eq!(got, want);
    assert_eq!(specs.iter().map(|s| s.len()).sum::<usize>(), model.p());
}

#[test]
fn resnet_and_gcn_tensor_names() {
    let model = presets::resnet(3, 2, 4, &leaky());
    let names: Vec<(String, Vec<usize>)> = model
        .param_specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("0.fn.0.weight".to_string(), vec![3, 3]),
            ("0.fn.0.bias".to_string(), vec![3]),
            ("1.fn.0.weight".to_string(), vec![3, 3]),
            ("1.fn.0.bias".to_string(), vec![3]),
            ("2.weight".to_string(), vec![4, 3]),
            ("2.bias".to_string(), vec![4]),
        ]
    );
    let x = random_batch(&mut rng(2), 3, 6);
    let model = presets::gcn(a_hat_on(&x, 2), 3, &[5], 2, &leaky());
    let names: Vec<(String, Vec<usize>)> = model
        .param_specs()
        .iter()
        .map(|s| (s.name.clone(), s.shape.clone()))
        .collect();
    assert_eq!(
        names,
        vec![
            ("1.weight".to_string(), vec![5, 3]),
            ("1.bias".to_string(), vec![5]),
            ("4.weight".to_string(), vec![2, 5]),
            ("4.bias".to_string(), vec![2]),
        ]
    );
}

// ------------------------------------------------- forward passes against hand-written networks

/// y = W x + b with W (out × in) row-major at θ[off..], b after it; returns the new offset.
fn affine(theta: &[f64], off: usize, inp: usize, out: usize, x: &[f64]) -> (Vec<f64>, usize) {
    let w = &theta[off..off + out * inp];
    let b = &theta[off + out * inp..off + out * inp + out];
    let y = (0..out)
        .map(|r| b[r] + (0..inp).map(|c| w[r * inp + c] * x[c]).sum::<f64>())
        .collect();
    (y, off + out * inp + out)
}

fn leaky_hand(z: f64) -> f64 {
    if z > 0.0 {
        z
    } else {
        0.01 * z
    }
}

#[test]
fn dnn_forward_matches_hand_written_network() {
    let (d, hidden, m, n) = (4, [6, 5], 3, 5);
    let model = presets::dnn(d, &hidden, m, &leaky());
    let theta = uniform_vec(&mut rng(3), model.p(), -1.0, 1.0);
    let x = random_batch(&mut rng(4), d, n);
    let u = model.outputs(&theta, &x);
    assert_eq!((u.features(), u.n()), (m, n));
    for i in 0..n {
        let mut h = x.col(i).to_vec();
        let mut off = 0;
        let mut prev = d;
        for &w in &hidden {
            let (z, o) = affine(&theta, off, prev, w, &h);
            h = z.into_iter().map(leaky_hand).collect();
            off = o;
            prev = w;
        }
        let (f, o) = affine(&theta, off, prev, m, &h);
        assert_eq!(o, model.p());
        for (a, fa) in f.iter().enumerate() {
            assert!((u.col(i)[a] - fa).abs() < 1e-13, "sample {i}, output {a}");
        }
    }
}

#[test]
fn resnet_forward_matches_hand_written_network() {
    let (d, depth, m, n) = (3, 3, 2, 4);
    let model = presets::resnet(d, depth, m, &leaky());
    let theta = uniform_vec(&mut rng(5), model.p(), -1.0, 1.0);
    let x = random_batch(&mut rng(6), d, n);
    let u = model.outputs(&theta, &x);
    for i in 0..n {
        let mut h = x.col(i).to_vec();
        let mut off = 0;
        for _ in 0..depth {
            let (z, o) = affine(&theta, off, d, d, &h);
            h = h.iter().zip(z).map(|(a, b)| a + leaky_hand(b)).collect();
            off = o;
        }
        let (f, o) = affine(&theta, off, d, m, &h);
        assert_eq!(o, model.p());
        for (a, fa) in f.iter().enumerate() {
            assert!((u.col(i)[a] - fa).abs() < 1e-13);
        }
    }
}

#[test]
fn gcn_forward_matches_kipf_welling_formula() {
    // H^l = σ(Â H^{l−1} W^l + 1 b^lᵀ), F = Â H^{L−1} W^L + 1 b^Lᵀ, with rows = nodes; W^l here is
    // the transpose of the stored (out × in) weight.
    let (d, hidden, m, n) = (3, [4], 2, 7);
    let x = random_batch(&mut rng(7), d, n);
    let a_hat = a_hat_on(&x, 2);
    let ad = a_hat.to_dense();
    let model = presets::gcn(a_hat, d, &hidden, m, &leaky());
    let theta = uniform_vec(&mut rng(8), model.p(), -1.0, 1.0);
    let u = model.outputs(&theta, &x);
    // Node-major H (n rows).
    let mut h: Vec<Vec<f64>> = (0..n).map(|i| x.col(i).to_vec()).collect();
    let mut off = 0;
    let mut prev = d;
    let widths: Vec<usize> = hidden.iter().copied().chain([m]).collect();
    for (l, &w) in widths.iter().enumerate() {
        let ah: Vec<Vec<f64>> = (0..n)
            .map(|i| {
                (0..prev)
                    .map(|c| (0..n).map(|j| ad[i * n + j] * h[j][c]).sum())
                    .collect()
            })
            .collect();
        let mut next = Vec::new();
        let mut o2 = off;
        for row in &ah {
            let (z, o) = affine(&theta, off, prev, w, row);
            o2 = o;
            let last = l + 1 == widths.len();
            next.push(if last {
                z
            } else {
                z.into_iter().map(leaky_hand).collect()
            });
        }
        off = o2;
        prev = w;
        h = next;
    }
    assert_eq!(off, model.p());
    for (i, hi) in h.iter().enumerate() {
        assert_eq!(hi.len(), m);
        for (a, ha) in hi.iter().enumerate() {
            assert!((u.col(i)[a] - ha).abs() < 1e-13, "node {i}, output {a}");
        }
    }
}

// ------------------------------------------------------------------------- losses and gradients

#[test]
fn loss_values_by_hand() {
    // u = [[1, 2], [3, 4]] as m = 2 features × n = 2 samples: columns (1, 2), (3, 4).
    let u = Batch::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]);
    let y = Batch::from_vec(2, 2, vec![0.0, 1.0, 5.0, 2.0]);
    // e = (1, 1, −2, 2), ‖e‖² = 10.
    assert!((LossKind::Mse.value(&u, &y) - 10.0 / 4.0).abs() < 1e-15);
    assert!((LossKind::HalfSse.value(&u, &y) - 5.0).abs() < 1e-15);
    assert_eq!(LossKind::Mse.c(2, 2), 0.25);
    assert_eq!(LossKind::Mse.c(10, 3), 1.0 / 30.0);
    assert_eq!(LossKind::HalfSse.c(10, 3), 0.5);
    let (l, g) = LossKind::Mse.value_and_cotangent(&u, &y);
    assert!((l - 2.5).abs() < 1e-15);
    assert_eq!(g.as_slice(), &[0.5, 0.5, -1.0, 1.0]);
    let (l, g) = LossKind::HalfSse.value_and_cotangent(&u, &y);
    assert!((l - 5.0).abs() < 1e-15);
    assert_eq!(g.as_slice(), &[1.0, 1.0, -2.0, 2.0]);
    // mse counts n·m entries: a 3-feature × 1-sample batch gives c = 1/3.
    let u = Batch::from_vec(3, 1, vec![1.0, 1.0, 1.0]);
    let y = Batch::zeros(3, 1);
    assert!((LossKind::Mse.value(&u, &y) - 1.0).abs() < 1e-15);
}

/// A θ for `model` (Torch init scaled up to make the check non-trivial) with every pre-activation
/// at least `KINK_MARGIN` from a kink.
fn theta_away_from_kinks(model: &Model, x: &Batch, seed: u64) -> Vec<f64> {
    for attempt in 0..1000 {
        let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, seed + attempt);
        theta.iter_mut().for_each(|t| *t *= 2.0);
        if min_kink_distance(model.net.as_ref(), &theta, x) >= KINK_MARGIN {
            return theta;
        }
    }
    panic!("no θ away from the kinks");
}

fn check_loss_gradient(model: &Model, x: &Batch, y: &Batch, seed: u64) {
    for loss in [LossKind::Mse, LossKind::HalfSse] {
        let theta = theta_away_from_kinks(model, x, seed);
        let mut grad = vec![f64::NAN; model.p()];
        let (l, _) = model.loss_and_grad(&theta, x, y, loss, &mut grad);
        // The loss by hand from the outputs.
        let u = model.outputs(&theta, x);
        let sse: f64 = u
            .as_slice()
            .iter()
            .zip(y.as_slice())
            .map(|(a, b)| (a - b) * (a - b))
            .sum();
        let c = match loss {
            LossKind::Mse => 1.0 / (x.n() * model.out_dim()) as f64,
            LossKind::HalfSse => 0.5,
        };
        assert!((l - c * sse).abs() <= 1e-13 * (1.0 + l));
        assert!((model.loss(&theta, x, y, loss) - l).abs() <= 1e-13 * (1.0 + l));
        let gnorm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        assert!(gnorm > 0.0);
        for k in 0..model.p() {
            let mut tp = theta.clone();
            let mut tm = theta.clone();
            tp[k] += H;
            tm[k] -= H;
            let fd = (model.loss(&tp, x, y, loss) - model.loss(&tm, x, y, loss)) / (2.0 * H);
            assert!(
                (grad[k] - fd).abs() <= 1e-6 * fd.abs() + 1e-8 * (1.0 + l),
                "{} / {}: ∂L/∂θ[{k}] = {}, finite difference {fd}",
                model.preset_name(),
                loss.name(),
                grad[k]
            );
        }
    }
}

#[test]
fn dnn_loss_gradient_matches_finite_differences() {
    let ds = Dataset::ball(6, 3, 2, 1);
    for act in [
        leaky(),
        Activation::Prelu { init: 0.25 },
        Activation::Sigmoid,
    ] {
        let model = presets::dnn(3, &[5, 4], 2, &act);
        check_loss_gradient(&model, &ds.x, &ds.y, 10);
    }
}

#[test]
fn resnet_loss_gradient_matches_finite_differences() {
    let ds = Dataset::ball(5, 3, 2, 2);
    let model = presets::resnet(3, 3, 2, &leaky());
    check_loss_gradient(&model, &ds.x, &ds.y, 20);
}

#[test]
fn gcn_loss_gradient_matches_finite_differences() {
    let ds = Dataset::ball(8, 3, 2, 3);
    let model = presets::gcn(a_hat_on(&ds.x, 2), 3, &[4, 4], 2, &leaky());
    check_loss_gradient(&model, &ds.x, &ds.y, 30);
}

#[test]
fn model_jvp_and_vjp_are_jacobian_products() {
    // J v by central differences of u(θ), and ⟨J v, w⟩ = ⟨v, Jᵀ w⟩.
    let ds = Dataset::ball(5, 3, 2, 4);
    let model = presets::dnn(3, &[6], 2, &leaky());
    let theta = theta_away_from_kinks(&model, &ds.x, 40);
    let mut r = rng(41);
    let v = uniform_vec(&mut r, model.p(), -1.0, 1.0);
    let w = random_batch(&mut r, 2, 5);
    let ev = model.evaluate(&theta, &ds.x);
    let jv = model.jvp(&theta, &ds.x, &ev, &v);
    let up = model.outputs(&common::axpy(&theta, H, &v), &ds.x);
    let um = model.outputs(&common::axpy(&theta, -H, &v), &ds.x);
    for j in 0..jv.as_slice().len() {
        let fd = (up.as_slice()[j] - um.as_slice()[j]) / (2.0 * H);
        assert!((jv.as_slice()[j] - fd).abs() <= 1e-6 * fd.abs() + 1e-8);
    }
    let mut jtw = vec![0.0; model.p()];
    model.vjp(&theta, &ds.x, &ev, &w, &mut jtw);
    let lhs = common::dot(jv.as_slice(), w.as_slice());
    let rhs = common::dot(&v, &jtw);
    assert!((lhs - rhs).abs() <= 1e-12 * (1.0 + lhs.abs()));
}

// ----------------------------------------------------------------------------------- training

#[test]
fn gradient_descent_drives_an_overparametrised_dnn_to_zero_loss() {
    let (n, d, m) = (10, 4, 2);
    let ds = Dataset::ball(n, d, m, 5);
    let model = presets::dnn(d, &[64, 64], m, &leaky());
    assert!(model.p() >= n * m);
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 5);
    let lr = LR;
    let opts = GdOptions {
        lr,
        epochs: 3000,
        loss: LossKind::Mse,
        track_kinks: false,
        precision: gradflow::train::Precision::F64,
    };
    let mut records = Vec::new();
    let out = gradient_descent(&model, &ds, &mut theta, &opts, |rec, _| {
        records.push(*rec);
        Control::Continue
    })
    .unwrap();
    assert_eq!(records.len(), 3001);
    for (k, rec) in records.iter().enumerate() {
        assert_eq!(rec.epoch, k);
        assert!((rec.t - k as f64 * lr).abs() <= 1e-12 * (1.0 + rec.t));
        assert!(rec.loss.is_finite() && rec.grad_norm.is_finite());
    }
    assert_eq!(out.last_epoch, 3000);
    assert!(!out.stopped_early);
    assert_eq!(out.initial_loss, records[0].loss);
    assert_eq!(out.final_loss, records[3000].loss);
    assert!(
        out.final_loss <= 1e-3 * out.initial_loss,
        "loss went from {} to {}",
        out.initial_loss,
        out.final_loss
    );
    // The returned θ is θ_E: its loss is the last record's.
    let l = model.loss(&theta, &ds.x, &ds.y, LossKind::Mse);
    assert!((l - out.final_loss).abs() <= 1e-12 * (1.0 + l));
}

const LR: f64 = 0.3;

#[test]
fn huge_step_diverges_with_a_helpful_error() {
    let ds = Dataset::ball(10, 4, 2, 6);
    let model = presets::dnn(4, &[16], 2, &leaky());
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 6);
    let opts = GdOptions {
        lr: 1e6,
        epochs: 200,
        loss: LossKind::Mse,
        track_kinks: false,
        precision: gradflow::train::Precision::F64,
    };
    match gradient_descent(&model, &ds, &mut theta, &opts, |_, _| Control::Continue) {
        Err(Error::Diverged(msg)) => assert!(msg.contains("train.lr"), "{msg}"),
        other => panic!("expected Error::Diverged, got {other:?}"),
    }
}

#[test]
fn non_positive_step_is_rejected() {
    let ds = Dataset::ball(4, 2, 1, 6);
    let model = presets::dnn(2, &[3], 1, &leaky());
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 6);
    for lr in [0.0, -0.1, f64::NAN, f64::INFINITY] {
        let opts = GdOptions {
            lr,
            epochs: 3,
            loss: LossKind::Mse,
            track_kinks: false,
            precision: gradflow::train::Precision::F64,
        };
        assert!(
            gradient_descent(&model, &ds, &mut theta, &opts, |_, _| Control::Continue).is_err()
        );
    }
}

#[test]
fn observer_can_stop_the_run() {
    let ds = Dataset::ball(8, 3, 2, 7);
    let model = presets::dnn(3, &[8], 2, &leaky());
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 7);
    let mut theta = theta0.clone();
    let opts = GdOptions {
        lr: 0.1,
        epochs: 100,
        loss: LossKind::Mse,
        track_kinks: true,
        precision: gradflow::train::Precision::F64,
    };
    let mut seen = Vec::new();
    let out = gradient_descent(&model, &ds, &mut theta, &opts, |rec, _| {
        seen.push(rec.epoch);
        if rec.epoch == 5 {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .unwrap();
    assert_eq!(out.last_epoch, 5);
    assert!(out.stopped_early);
    assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(out.gradient_evaluations, 6);
    // Five steps were taken: redo them by hand with the model's gradient.
    let mut t = theta0;
    let mut g = vec![0.0; t.len()];
    for _ in 0..5 {
        model.loss_and_grad(&t, &ds.x, &ds.y, LossKind::Mse, &mut g);
        for (a, b) in t.iter_mut().zip(&g) {
            *a -= 0.1 * b;
        }
    }
    for (a, b) in t.iter().zip(&theta) {
        assert!((a - b).abs() <= 1e-12 * (1.0 + a.abs()));
    }
}

#[test]
fn one_step_on_a_linear_model_matches_hand_computation() {
    // f(x) = W x + b, half-sse: ∇_W L = Σ_i e_i x_iᵀ, ∇_b L = Σ_i e_i, e_i = W x_i + b − y_i.
    let (n, d, m) = (5, 3, 2);
    let ds = Dataset::ball(n, d, m, 8);
    let model = presets::dnn(d, &[], m, &leaky());
    assert_eq!(model.p(), m * d + m);
    let theta0 = uniform_vec(&mut rng(9), model.p(), -1.0, 1.0);
    let lr = 0.05;
    let mut want = theta0.clone();
    let mut loss0 = 0.0;
    for i in 0..n {
        let xi = ds.x.col(i);
        for a in 0..m {
            let u: f64 = theta0[m * d + a] + (0..d).map(|c| theta0[a * d + c] * xi[c]).sum::<f64>();
            let e = u - ds.y.col(i)[a];
            loss0 += 0.5 * e * e;
            for c in 0..d {
                want[a * d + c] -= lr * e * xi[c];
            }
            want[m * d + a] -= lr * e;
        }
    }
    let mut theta = theta0.clone();
    let opts = GdOptions {
        lr,
        epochs: 1,
        loss: LossKind::HalfSse,
        track_kinks: false,
        precision: gradflow::train::Precision::F64,
    };
    let mut first = None;
    let mut second = None;
    gradient_descent(&model, &ds, &mut theta, &opts, |rec, th| {
        if rec.epoch == 0 {
            first = Some((rec.loss, th.to_vec()));
        } else {
            second = Some(th.to_vec());
        }
        Control::Continue
    })
    .unwrap();
    let (l0, th0) = first.unwrap();
    assert!((l0 - loss0).abs() <= 1e-13 * (1.0 + loss0));
    assert_eq!(th0, theta0);
    for (k, (a, b)) in theta.iter().zip(&want).enumerate() {
        assert!((a - b).abs() <= 1e-13, "θ₁[{k}] = {a}, by hand {b}");
    }
    assert_eq!(second.unwrap(), theta);
}
