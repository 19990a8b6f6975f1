//! The compiled route of the kink-aware flow (dnn and resnet presets: structured pinned rows,
//! one multi-column reverse pass per sample, a Cholesky factorisation of their Gram matrix;
//! gcn: the compiled passes with Â, the layers' rows) against the general layer path (one
//! one-sample reverse pass per pinned entry, an eigen pseudo-inverse), an independent route
//! through the same mathematics:
//!
//! - at a state with many pinned entries (several per sample, in different layers, with
//!   effective slopes installed): the projected field, the normal speeds on both sides, the
//!   effective slopes and the drift projection agree to rounding;
//! - whole solves with events and sliding take the same trajectory (same events, θ(T) to 1e-9),
//!   the gcn's too.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::system::KinkSystem;
use gradflow::flow::{gradient_flow, FlowOptions};
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::Control;

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n.max(1e-300)).sqrt()
}

/// Pins `count` entries spread over samples and layers (several per sample), sets their pieces
/// and slopes, evaluates the field and projects θ, by either route.
#[allow(clippy::type_complexity)]
fn pinned_state(
    model: &Model,
    data: &Dataset,
    theta: &[f64],
    compiled: bool,
    pinned: &[usize],
) -> (bool, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut sys = KinkSystem::new(model, data, LossKind::Mse, theta, compiled).expect("system");
    for (j, &e) in pinned.iter().enumerate() {
        sys.pieces[e] = 0;
        // Slopes inside [α, 1], different per entry (they enter upstream cotangents).
        sys.pin_slopes
            .insert(e, 0.2 + 0.6 * ((j * 7 % 11) as f64 / 11.0));
    }
    sys.pinned = pinned.to_vec();
    sys.refresh();
    let mut f = vec![0.0; theta.len()];
    sys.evaluate(theta, &mut f).expect("evaluate");
    let mut th = theta.to_vec();
    sys.project_onto_knots(&mut th);
    (
        sys.is_compiled(),
        f,
        sys.last.zdot_left.clone(),
        sys.last.zdot_right.clone(),
        sys.last.slopes.clone(),
        th,
    )
}

fn check_routes(model: &Model, data: &Dataset, seed: u64) {
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, seed);
    let entries = {
        let sys = KinkSystem::new(model, data, LossKind::Mse, &theta, true).unwrap();
        sys.entries()
    };
    // Every 7th entry: several per sample, in every layer (17 pinned or more).
    let pinned: Vec<usize> = (0..entries).step_by(7).collect();
    assert!(pinned.len() >= 17);
    let (c1, f1, l1, r1, s1, t1) = pinned_state(model, data, &theta, true, &pinned);
    let (c0, f0, l0, r0, s0, t0) = pinned_state(model, data, &theta, false, &pinned);
    assert!(c1 && !c0, "routes not as requested");
    println!(
        "field {:.1e}, ż⁻ {:.1e}, ż⁺ {:.1e}, slopes {:.1e}, projected θ {:.1e}",
        rel(&f1, &f0),
        rel(&l1, &l0),
        rel(&r1, &r0),
        rel(&s1, &s0),
        rel(&t1, &t0)
    );
    assert!(rel(&f1, &f0) < 1e-9, "field {}", rel(&f1, &f0));
    assert!(rel(&l1, &l0) < 1e-8 && rel(&r1, &r0) < 1e-8);
    assert!(rel(&s1, &s0) < 1e-8);
    assert!(rel(&t1, &t0) < 1e-12);
    // The projection moved θ (the entries were not on their kinks), by the same step.
    let moved: Vec<f64> = t1.iter().zip(&theta).map(|(a, b)| a - b).collect();
    let moved0: Vec<f64> = t0.iter().zip(&theta).map(|(a, b)| a - b).collect();
    assert!(rel(&moved, &moved0) < 1e-8, "{}", rel(&moved, &moved0));
}

#[test]
fn batched_rows_equal_one_sample_passes_dnn() {
    let model = presets::dnn(4, &[8, 6], 3, &Activation::leaky_relu());
    check_routes(&model, &Dataset::ball(12, 4, 3, 1), 1);
}

#[test]
fn batched_rows_equal_one_sample_passes_prelu() {
    let model = presets::dnn(4, &[8, 6], 3, &Activation::Prelu { init: 0.25 });
    check_routes(&model, &Dataset::ball(12, 4, 3, 2), 2);
}

#[test]
fn batched_rows_equal_one_sample_passes_resnet() {
    let model = presets::resnet(5, 3, 2, &Activation::leaky_relu());
    check_routes(&model, &Dataset::ball(10, 5, 2, 3), 3);
}

#[test]
fn batched_rows_equal_one_sample_passes_piecewise() {
    let pw = gradflow::activation::PiecewisePolynomial::interpolate(
        gradflow::activation::sigmoid,
        -4.0,
        4.0,
        4,
    )
    .unwrap();
    let model = presets::dnn(4, &[8, 6], 2, &Activation::Piecewise(pw));
    let data = Dataset::ball(10, 4, 2, 4);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 4);
    let sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, true).unwrap();
    // Pin entries on the knot nearest below them (piece index − 1 keeps "left of the knot").
    let mut pinned = Vec::new();
    let mut pieces = sys.pieces.clone();
    for e in (0..sys.entries()).step_by(9) {
        if pieces[e] > 0 {
            pieces[e] -= 1;
            pinned.push(e);
        }
    }
    drop(sys);
    assert!(pinned.len() >= 8, "{}", pinned.len());
    let eval = |compiled: bool| {
        let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, compiled).unwrap();
        sys.pieces = pieces.clone();
        sys.pinned = pinned.clone();
        sys.refresh();
        let mut f = vec![0.0; theta.len()];
        sys.evaluate(&theta, &mut f).unwrap();
        (sys.is_compiled(), f, sys.last.zdot_left.clone())
    };
    let (c1, f1, z1) = eval(true);
    let (c0, f0, z0) = eval(false);
    assert!(c1 && !c0);
    assert!(rel(&f1, &f0) < 1e-9, "{}", rel(&f1, &f0));
    assert!(rel(&z1, &z0) < 1e-8, "{}", rel(&z1, &z0));
}

/// Whole solves through crossings and sliding: the same events and θ(T) by both routes.
fn same_solve(model: &Model, data: &Dataset, t_end: f64) {
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let run = |compiled: bool| {
        let mut opts = FlowOptions::new(t_end, 1e-9, 1e-11, 10, LossKind::Mse);
        opts.compiled = compiled;
        let mut th = theta0.clone();
        let out = gradient_flow(model, data, &mut th, &opts, |_, _| Control::Continue).unwrap();
        (out, th)
    };
    let (a, ta) = run(true);
    let (b, tb) = run(false);
    println!(
        "compiled: {} crossings, {} slides, max pinned {}; layers: {} / {} / {}; θ gap {:.1e}",
        a.events.crossings,
        a.events.slides,
        a.events.max_pinned,
        b.events.crossings,
        b.events.slides,
        b.events.max_pinned,
        rel(&ta, &tb)
    );
    assert!(a.events.slides >= 2, "no sliding exercised");
    assert_eq!(
        (a.events.crossings, a.events.slides, a.events.releases),
        (b.events.crossings, b.events.slides, b.events.releases)
    );
    assert!(rel(&ta, &tb) < 1e-9, "{}", rel(&ta, &tb));
}

#[test]
fn compiled_solve_matches_layer_solve_dnn() {
    let model = presets::dnn(4, &[8, 8], 2, &Activation::leaky_relu());
    same_solve(&model, &Dataset::ball(10, 4, 2, 0), 10.0);
}

#[test]
fn compiled_solve_matches_layer_solve_resnet() {
    let model = presets::resnet(4, 2, 2, &Activation::leaky_relu());
    same_solve(&model, &Dataset::ball(10, 4, 2, 0), 10.0);
}

/// The gcn: compiled passes with Â (one part), rows from the layers' support-restricted passes.
fn same_gcn_solve(act: &Activation) {
    let data = Dataset::ball(10, 4, 2, 2);
    let graph = gradflow::graph::Graph::knn(&data.x, 2).expect("graph");
    let a_hat = std::sync::Arc::new(graph.normalized_adjacency());
    let model = presets::gcn(a_hat, 4, &[8, 8], 2, act);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta0, true).unwrap();
    assert!(sys.is_compiled(), "the gcn takes the compiled route");
    drop(sys);
    same_solve(&model, &data, 10.0);
}

#[test]
fn compiled_solve_matches_layer_solve_gcn() {
    same_gcn_solve(&Activation::leaky_relu());
}

#[test]
fn compiled_solve_matches_layer_solve_gcn_prelu() {
    same_gcn_solve(&Activation::Prelu { init: 0.25 });
}

/// The progress callback sees every accepted step: t increasing to T, counts matching the outcome.
#[test]
fn progress_follows_accepted_steps_to_the_end() {
    let model = presets::dnn(4, &[8, 8], 2, &Activation::leaky_relu());
    let data = Dataset::ball(10, 4, 2, 0);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let opts = FlowOptions::new(5.0, 1e-8, 1e-10, 5, LossKind::Mse);
    let mut seen: Vec<gradflow::flow::FlowProgress> = Vec::new();
    let mut th = theta0.clone();
    let out = gradflow::flow::gradient_flow_with_progress(
        &model,
        &data,
        &mut th,
        &opts,
        |_, _| Control::Continue,
        &mut |p| seen.push(*p),
    )
    .unwrap();
    assert_eq!(seen.len() as u64, out.steps_accepted);
    assert!(seen
        .windows(2)
        .all(|w| w[1].t >= w[0].t && w[1].steps_accepted == w[0].steps_accepted + 1));
    let last = seen.last().unwrap();
    assert_eq!(last.t, 5.0);
    assert_eq!(last.gradient_evaluations, out.counts.gradients);
    assert!(seen.iter().any(|p| p.pinned > 0), "no pinned entries seen");
}

/// A solve called from outside the pool runs on one of its workers (so its passes' joins keep
/// one half on that thread instead of blocking the caller), and takes the same trajectory, bit
/// for bit, as the same solve on a one-thread pool (the passes' two parts are summed in the
/// same order whichever thread runs them).
#[test]
fn the_solve_runs_on_a_pool_worker_and_matches_a_one_thread_pool() {
    let model = presets::dnn(4, &[12, 12], 2, &Activation::leaky_relu());
    let data = Dataset::ball(10, 4, 2, 3);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 0);
    let opts = FlowOptions::new(2.0, 1e-9, 1e-11, 5, LossKind::Mse);
    assert!(
        rayon::current_thread_index().is_none(),
        "the test thread is not a worker"
    );
    let solve = || {
        let mut th = theta0.clone();
        let mut workers = Vec::new();
        let out = gradient_flow(&model, &data, &mut th, &opts, |_, _| {
            workers.push(rayon::current_thread_index());
            Control::Continue
        })
        .unwrap();
        (out.events.crossings, workers, th)
    };
    let (crossings, workers, theta) = solve();
    assert!(crossings > 0, "no kink crossed");
    assert!(
        !workers.is_empty() && workers.iter().all(Option::is_some),
        "{workers:?}"
    );
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let (crossings_one, _, theta_one) = one.install(solve);
    assert_eq!(crossings_one, crossings);
    assert!(
        theta_one == theta,
        "θ(T) differs: {}",
        rel(&theta_one, &theta)
    );
}
