//! Integration tests of the flow solver on Siamese networks (a shared tower applied to both
//! halves of every sample, combined by |f(a) − f(b)| or [f(a); f(b)]): the tower's activation
//! layers carry 2·n·width entries (both applications) and the |·| of AbsDiff is a kink of its
//! own. Checked against independent computations:
//!
//! - the flow's loss at T against the η → 0 limit of GD (Richardson extrapolation; GD runs the
//!   ordinary, uncontrolled network), with crossings and sliding asserted to happen, for both
//!   combinations;
//! - the rows ∇_θ z_j the flow computes for pinned entries (one-sample seeded passes through the
//!   shared tower) against central finite differences of the uncontrolled pre-activations, for
//!   entries of both applications and of the |·| layer;
//! - a tower that mixes samples (a graph tower, run once per half) is refused with an error
//!   naming solver = "gd".

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::system::KinkSystem;
use gradflow::flow::{gradient_flow, FlowOptions, FlowOutcome};
use gradflow::graph::{scaled_laplacian, Graph};
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{ActivationLayer, ChebConv, Dense, Layer, PairCombine, Serial, SharedPair};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};

const ALPHA: f64 = Activation::DEFAULT_LEAKY_SLOPE;
/// Samples, tower widths (4 → 6 → 3), output dimension.
const N: usize = 8;
const W1: usize = 6;
const W2: usize = 3;

/// Tower 4 → [6, 3] (leaky ReLU after each dense), combined, then a dense head to m = 2.
fn problem(combine: PairCombine, seed: u64) -> (Model, Dataset, Vec<f64>) {
    let model = presets::siamese(4, &[W1, W2], combine, 2, &Activation::leaky_relu());
    let data = Dataset::pairs(N, 4, 2, seed);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, seed);
    (model, data, theta0)
}

fn flow(model: &Model, data: &Dataset, theta0: &[f64], t_end: f64, rtol: f64) -> FlowOutcome {
    let opts = FlowOptions::new(t_end, rtol, rtol * 1e-2, 1, LossKind::Mse);
    let mut th = theta0.to_vec();
    gradient_flow(model, data, &mut th, &opts, |_, _| Control::Continue).expect("flow solve")
}

fn gd_final(model: &Model, data: &Dataset, theta0: &[f64], lr: f64, t_end: f64) -> f64 {
    let mut th = theta0.to_vec();
    let opts = GdOptions {
        lr,
        epochs: (t_end / lr).round() as usize,
        loss: LossKind::Mse,
        precision: gradflow::config::Precision::F64,
        track_kinks: false,
    };
    gradient_descent(model, data, &mut th, &opts, |_, _| Control::Continue)
        .expect("gd")
        .final_loss
}

/// Where a global entry of the flow lives: (layer 0 / 1 of the tower or 2 for |·|, application
/// 0 = a / 1 = b, sample, unit). Layout: tower layer 1 (2·n·6 entries), tower layer 2 (2·n·3),
/// then |·| (n·3); inside a tower layer application-major, (r·n + i)·width + u.
fn place(e: usize) -> (usize, usize, usize, usize) {
    let l1 = 2 * N * W1;
    let l2 = 2 * N * W2;
    let (layer, local, w) = if e < l1 {
        (0, e, W1)
    } else if e < l1 + l2 {
        (1, e - l1, W2)
    } else {
        (2, e - l1 - l2, W2)
    };
    let slot = local / w;
    (layer, slot / N, slot % N, local % w)
}

/// Every pre-activation of the *uncontrolled* network at θ in the order the pair visits them
/// (tower layers on the 2n stacked columns, then f(a) − f(b)).
fn plain_z(model: &Model, data: &Dataset, theta: &[f64]) -> Vec<f64> {
    let ev = model.evaluate(theta, &data.x);
    let mut z = Vec::new();
    model.visit_pre_activations(&data.x, &ev, &mut |pa| z.extend_from_slice(pa.z.as_slice()));
    z
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

/// L(T) of the flow against the η → 0 limit of GD on the ordinary network: first-order
/// Richardson extrapolations R(η) = 2 L_GD(η/2) − L_GD(η) scatter (GD chatters around sliding
/// surfaces), so the tolerance is the spread of the three finest, and the flow must lie within
/// it. The run must cross kinks and slide, with sliding entries in the second application of
/// the tower (and, for AbsDiff, on the |·| kink), so the test cannot pass vacuously.
fn flow_matches_richardson_limit_of_gd(combine: PairCombine) {
    let (model, data, theta0) = problem(combine, 1);
    let t_end = 10.0;
    let mut flows = Vec::new();
    for rtol in [1e-8, 1e-10] {
        let out = flow(&model, &data, &theta0, t_end, rtol);
        let slid: Vec<_> = out
            .events
            .intervals
            .iter()
            .map(|i| place(i.entry))
            .collect();
        println!(
            "{combine:?} flow rtol {rtol:e}: L(T) = {:.12e}; {} gradients; crossings {} slides {} \
             releases {} max pinned {}; slid (layer, application, sample, unit): {slid:?}",
            out.final_loss,
            out.counts.gradients,
            out.events.crossings,
            out.events.slides,
            out.events.releases,
            out.events.max_pinned,
        );
        assert_eq!(
            out.events.tracked,
            2 * N * (W1 + W2)
                + if combine == PairCombine::AbsDiff {
                    N * W2
                } else {
                    0
                }
        );
        assert!(out.events.crossings > 0 && out.events.slides > 0);
        assert!(
            slid.iter().any(|&(l, r, _, _)| l < 2 && r == 1),
            "no entry of the second application slid"
        );
        if combine == PairCombine::AbsDiff {
            assert!(slid.iter().any(|&(l, ..)| l == 2), "no |·| entry slid");
        }
        flows.push(out.final_loss);
    }
    let lf = flows[1];
    let flow_gap = (flows[0] - flows[1]).abs();
    let etas = [1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5, 3.125e-5];
    let gd: Vec<f64> = etas
        .iter()
        .map(|&eta| gd_final(&model, &data, &theta0, eta, t_end))
        .collect();
    crate::richardson::assert_flow_is_gd_limit(lf, flow_gap, &etas, &gd, 3e-5);
}

#[test]
fn abs_diff_flow_matches_richardson_limit_of_gd() {
    flow_matches_richardson_limit_of_gd(PairCombine::AbsDiff);
}

#[test]
fn concat_flow_matches_richardson_limit_of_gd() {
    flow_matches_richardson_limit_of_gd(PairCombine::Concat);
}

/// The rows ∇_θ z_j the flow computes for pinned entries — one-sample seeded reverse passes
/// through the tower run on both halves — against central finite differences of the
/// uncontrolled pre-activations. Entries of both tower layers in both applications of two
/// samples, and of the |·| layer, are pinned with the slope of the side their z lies on
/// (σ(b) + s(z − b) = σ(z) for these piecewise-linear σ), so the controlled network is the
/// ordinary one and its Jacobian is what finite differences see. The projected field is then
/// checked against −(g − Rᵀ(RRᵀ)⁻¹Rg) with g by ordinary backprop and R by differences.
#[test]
fn pinned_rows_of_both_applications_match_finite_differences() {
    for combine in [PairCombine::AbsDiff, PairCombine::Concat] {
        let (model, data, theta) = problem(combine, 4);
        let z = plain_z(&model, &data, &theta);
        let smallest = z.iter().map(|v| v.abs()).fold(f64::INFINITY, f64::min);
        assert!(
            smallest > 1e-4,
            "a pre-activation at {smallest:e} of a kink"
        );
        let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, true).expect("system");
        assert!(!sys.is_compiled());
        assert_eq!(sys.entries(), z.len(), "entries: both applications (+ |·|)");
        // Pick, for samples 2 and 5, the first unit of every (layer, application) and of |·|.
        let mut pinned: Vec<usize> = (0..z.len())
            .filter(|&e| {
                let (l, _, i, u) = place(e);
                (i == 2 || i == 5) && u == (l + i) % W2 && l < 3
            })
            .collect();
        pinned.sort();
        let second = pinned
            .iter()
            .filter(|&&e| place(e).1 == 1 && place(e).0 < 2);
        assert!(second.count() >= 4);
        for &e in &pinned {
            let (l, ..) = place(e);
            let side = z[e] > 0.0;
            let slope = match (l, side) {
                (2, true) => 1.0,
                (2, false) => -1.0,
                (_, true) => 1.0,
                (_, false) => ALPHA,
            };
            sys.pieces[e] = 0;
            sys.pin_slopes.insert(e, slope);
        }
        sys.pinned = pinned.clone();
        sys.refresh();
        let mut f = vec![0.0; theta.len()];
        sys.evaluate(&theta, &mut f).expect("evaluate");
        let rows = sys.last_rows().to_vecs();
        assert_eq!(rows.len(), pinned.len());
        drop(sys);

        let p = theta.len();
        let h = 1e-6;
        let mut jac = vec![vec![0.0; p]; z.len()];
        for k in 0..p {
            let (mut tp, mut tm) = (theta.clone(), theta.clone());
            tp[k] += h;
            tm[k] -= h;
            let (a, b) = (plain_z(&model, &data, &tp), plain_z(&model, &data, &tm));
            for (row, (x, y)) in jac.iter_mut().zip(a.iter().zip(&b)) {
                row[k] = (x - y) / (2.0 * h);
            }
        }
        let mut worst: f64 = 0.0;
        for (r, &e) in rows.iter().zip(&pinned) {
            let fd = &jac[e];
            let err = norm(&fd.iter().zip(r).map(|(a, b)| a - b).collect::<Vec<_>>()) / norm(fd);
            worst = worst.max(err);
            assert!(
                err < 1e-7,
                "{combine:?}: row of entry {e} {:?} off by {err:e}",
                place(e)
            );
        }
        // The projection with rows from differences and the ordinary gradient.
        let mut g = vec![0.0; p];
        model.loss_and_grad(&theta, &data.x, &data.y, LossKind::Mse, &mut g);
        let r_fd: Vec<&Vec<f64>> = pinned.iter().map(|&e| &jac[e]).collect();
        let k = r_fd.len();
        let gram = faer::Mat::<f64>::from_fn(k, k, |i, j| dot(r_fd[i], r_fd[j]));
        let rg = faer::Mat::<f64>::from_fn(k, 1, |i, _| dot(r_fd[i], &g));
        let mu = faer::prelude::Solve::solve(
            &gram.llt(faer::Side::Lower).expect("independent rows"),
            &rg,
        );
        let mut f_exp: Vec<f64> = g.iter().map(|v| -v).collect();
        for (i, r) in r_fd.iter().enumerate() {
            for (o, rv) in f_exp.iter_mut().zip(r.iter()) {
                *o += mu[(i, 0)] * rv;
            }
        }
        let f_err = norm(&f.iter().zip(&f_exp).map(|(a, b)| a - b).collect::<Vec<_>>()) / norm(&f);
        let moved = norm(&f.iter().zip(&g).map(|(a, b)| a + b).collect::<Vec<_>>()) / norm(&f);
        println!(
            "{combine:?}: {k} pinned rows, worst relative row error {worst:.2e}; projected field \
             vs independent projection {f_err:.2e} (the projection moves it by {moved:.2e})"
        );
        assert!(
            f_err < 1e-6,
            "{combine:?}: projected field off by {f_err:e}"
        );
        assert!(moved > 1e-3);
    }
}

/// A tower that mixes samples runs once per half (each half a whole graph signal): the flow's
/// entry layout cannot hold it, and the solve is refused with an error naming the fix.
#[test]
fn graph_tower_is_refused_with_the_fix() {
    let g = Graph::from_edges(5, vec![(0, 1), (1, 2), (2, 0), (2, 3), (3, 4)]);
    let act = Activation::leaky_relu();
    let tower = Serial::new(vec![
        Box::new(ChebConv::new(
            2,
            3,
            2,
            std::sync::Arc::new(scaled_laplacian(&g, None)),
        )),
        Box::new(ActivationLayer::new(act.clone(), 3)),
    ]);
    let pair = SharedPair::new(Box::new(tower), PairCombine::AbsDiff);
    let layers: Vec<Box<dyn Layer>> = vec![Box::new(pair), Box::new(Dense::new(3, 1))];
    let model = Model::new(Box::new(Serial::new(layers)), None, act);
    let data = Dataset::pairs(5, 2, 1, 0);
    let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let opts = FlowOptions::new(1.0, 1e-8, 1e-10, 1, LossKind::Mse);
    let err = gradient_flow(&model, &data, &mut theta, &opts, |_, _| Control::Continue)
        .expect_err("a graph tower must be refused")
        .to_string();
    println!("{err}");
    assert!(err.contains("ran 2 times in one forward pass"), "{err}");
    assert!(err.contains("solver = \"gd\""), "{err}");
}
