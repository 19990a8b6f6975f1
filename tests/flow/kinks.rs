//! Integration tests of the gradient-flow solver on a kinked network (leaky ReLU), where the
//! solver's event handling and Filippov sliding are exercised, each against an independent
//! computation:
//!
//! - the flow's loss at T against the η → 0 limit of gradient descent (Richardson
//!   extrapolation from several small η; the tolerance is the observed spread of the
//!   extrapolations), and the flow at two tolerances against each other (much tighter); for
//!   PReLU, ReLU and a curved piecewise polynomial, GD's error against the flow is first order;
//! - sliding along the solver's own trajectory: while the solver reports an entry sliding, that
//!   pre-activation — recomputed by the *uncontrolled* network — stays on its kink, and small-η
//!   GD chatters within O(η) of the kink over the same interval (so the sliding is the true
//!   dynamics, not an artefact of the projection);
//! - the sliding invariants of `KinkSystem` at a state the solver reports as sliding: finite
//!   differences of the uncontrolled pre-activations along the projected field (pinned ones
//!   stationary, unpinned ones moving as the field says), the field against an independent
//!   projection (gradient by ordinary backprop, normals by finite differences), effective slopes
//!   in [α, 1], and the Filippov reading: the ordinary gradient with the reported slopes installed
//!   at the pinned entries *is* the projected field.
//!
//! All on small DNNs 4 → [8, 8] → 2, n = 10 (p = 130, 160 tracked pre-activations). An ignored,
//! failing test documents a bug in the solver's event switching (spurious release and re-pin).

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::system::KinkSystem;
use gradflow::flow::{gradient_flow, FlowOptions, FlowOutcome};
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::activation::{ControlState, Pin, PINNED};
use gradflow::layers::{ActivationLayer, Layer, Structure};
use gradflow::loss::LossKind;
use gradflow::model::Model;
use gradflow::presets;
use gradflow::train::{gradient_descent, Control, GdOptions};

const ALPHA: f64 = Activation::DEFAULT_LEAKY_SLOPE;
const SEED: u64 = 0;
const T_END: f64 = 10.0;

fn problem() -> (Model, Dataset, Vec<f64>) {
    let model = presets::dnn(4, &[8, 8], 2, &Activation::leaky_relu());
    let data = Dataset::ball(10, 4, 2, SEED);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, SEED);
    (model, data, theta0)
}

/// (t, pinned count, θ(t)) at one output time.
type Rec = (f64, usize, Vec<f64>);

fn solve(
    model: &Model,
    data: &Dataset,
    theta0: &[f64],
    opts: &FlowOptions,
    mut stop_at: impl FnMut(&gradflow::flow::FlowRecord) -> bool + Send,
) -> (FlowOutcome, Vec<Rec>, Vec<f64>) {
    let mut th = theta0.to_vec();
    let mut recs = Vec::new();
    let out = gradient_flow(model, data, &mut th, opts, |r, t| {
        recs.push((r.t, r.pinned, t.to_vec()));
        if stop_at(r) {
            Control::Stop
        } else {
            Control::Continue
        }
    })
    .expect("flow solve");
    (out, recs, th)
}

fn gd_final(model: &Model, data: &Dataset, theta0: &[f64], lr: f64, t_end: f64) -> f64 {
    let epochs = (t_end / lr).round() as usize;
    let mut th = theta0.to_vec();
    let opts = GdOptions {
        lr,
        epochs,
        loss: LossKind::Mse,
        precision: gradflow::config::Precision::F64,
        track_kinks: false,
    };
    gradient_descent(model, data, &mut th, &opts, |_, _| Control::Continue)
        .expect("gd")
        .final_loss
}

/// Every pre-activation of the *uncontrolled* network at θ, in the solver's global entry order
/// (activation layers in order, then i·width + unit).
fn plain_z(model: &Model, data: &Dataset, theta: &[f64]) -> Vec<f64> {
    let ev = model.evaluate(theta, &data.x);
    let mut z = Vec::new();
    model.visit_pre_activations(&data.x, &ev, &mut |pa| {
        z.extend_from_slice(pa.z.as_slice());
    });
    z
}

fn activation_layers(model: &Model) -> Vec<&ActivationLayer> {
    fn walk<'a>(l: &'a dyn Layer, out: &mut Vec<&'a ActivationLayer>) {
        if let Structure::Elementwise(a) = l.structure() {
            out.push(a);
        }
        for c in l.children() {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    walk(model.net.as_ref(), &mut out);
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn axpy(x: &[f64], s: f64, v: &[f64]) -> Vec<f64> {
    x.iter().zip(v).map(|(a, b)| a + s * b).collect()
}

// ---------------------------------------------------------------------------------------------
// 3. Against the η → 0 limit of GD
// ---------------------------------------------------------------------------------------------

/// L(T) of the kink-aware flow agrees with the η → 0 limit of GD. GD near a sliding surface
/// chatters, so its error is O(η) with an irregular constant and first-order Richardson
/// extrapolations R(η) = 2 L_GD(η/2) − L_GD(η) scatter; the tolerance is that scatter (the
/// spread of the three finest extrapolations), and the flow must lie within it of them. The
/// solves at rtol 1e-8 and 1e-10 must agree far more tightly (< 1/100 of the spread).
#[test]
fn leaky_flow_matches_richardson_limit_of_gd() {
    let (model, data, theta0) = problem();
    let mut flows = Vec::new();
    for rtol in [1e-8, 1e-10] {
        let opts = FlowOptions::new(T_END, rtol, rtol * 1e-2, 1, LossKind::Mse);
        let (out, _, _) = solve(&model, &data, &theta0, &opts, |_| false);
        println!(
            "flow rtol {rtol:e}: L(T) = {:.12e}; {} gradients; crossings {} slides {} releases {} \
             max pinned {} sliding time {:.3}",
            out.final_loss,
            out.counts.gradients,
            out.events.crossings,
            out.events.slides,
            out.events.releases,
            out.events.max_pinned,
            out.events.sliding_time
        );
        // The configuration must exercise what this file is about.
        assert!(out.events.crossings > 0 && out.events.slides > 0);
        flows.push(out.final_loss);
    }
    let lf = flows[1];
    let flow_gap = (flows[0] - flows[1]).abs();

    let etas = [1e-3, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5];
    let gd: Vec<f64> = etas
        .iter()
        .map(|&eta| gd_final(&model, &data, &theta0, eta, T_END))
        .collect();
    crate::richardson::assert_flow_is_gd_limit(lf, flow_gap, &etas, &gd, 1e-5);
}

/// Beyond leaky ReLU: for PReLU (trainable slope), ReLU (a zero slope on one side) and a
/// piecewise polynomial with curved pieces (continuations that differ from σ), GD's loss at T
/// approaches the flow's at first order: the error ratio when η halves stays near 2 (within
/// [1.6, 2.5]; GD's chattering on sliding surfaces makes it irregular, observed 1.75–2.21 on
/// nine configurations), and the flow's own rtol error is far below GD's smallest error.
#[test]
fn other_kinked_activations_gd_converges_to_flow_at_first_order() {
    let curved = Activation::Piecewise(
        gradflow::activation::PiecewisePolynomial::new(
            vec![-0.5, 0.4],
            vec![
                vec![-0.325, 0.1],
                vec![0.0, 1.0, 0.5],
                vec![-0.256, 2.0, 0.0, -1.0],
            ],
        )
        .expect("continuous"),
    );
    let t_end = 5.0;
    for (act, seed) in [
        (Activation::Prelu { init: 0.25 }, 5u64),
        (Activation::Relu, 2),
        (curved, 3),
    ] {
        let model = presets::dnn(4, &[8, 8], 2, &act);
        let data = Dataset::ball(10, 4, 2, seed);
        let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, seed);
        let mut lf = Vec::new();
        let mut events = (0, 0);
        for rtol in [1e-8, 1e-10] {
            let opts = FlowOptions::new(t_end, rtol, rtol * 1e-2, 1, LossKind::Mse);
            let (out, _, _) = solve(&model, &data, &theta0, &opts, |_| false);
            events = (out.events.crossings, out.events.slides);
            lf.push(out.final_loss);
        }
        let errs: Vec<f64> = [8e-4, 4e-4, 2e-4, 1e-4]
            .iter()
            .map(|&eta| gd_final(&model, &data, &theta0, eta, t_end) - lf[1])
            .collect();
        let ratios: Vec<f64> = errs.windows(2).map(|w| w[0] / w[1]).collect();
        println!(
            "{act} (seed {seed}, {} crossings, {} slides): L(T) {:.10e}; GD errors {:?}; \
             ratios {ratios:.3?}; flow rtol gap {:.1e}",
            events.0,
            events.1,
            lf[1],
            errs.iter().map(|e| format!("{e:.3e}")).collect::<Vec<_>>(),
            (lf[0] - lf[1]).abs()
        );
        assert!(events.0 > 0, "{act}: no kink crossings");
        for r in &ratios {
            assert!((1.6..=2.5).contains(r), "{act}: error ratio {r}");
        }
        assert!((lf[0] - lf[1]).abs() < 1e-3 * errs[3].abs());
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Sliding
// ---------------------------------------------------------------------------------------------

/// Along the solver's trajectory, an entry the solver reports as sliding on [t₀, t₁] stays on
/// its kink in the uncontrolled network (|z| ≤ 1e-8 at every output time inside the interval),
/// though it moves before it; GD with a small step chatters within O(η) of the kink over the
/// same interval.
#[test]
fn reported_sliding_holds_the_true_preactivation_on_its_kink() {
    let (model, data, theta0) = problem();
    let count = 400;
    let opts = FlowOptions::new(T_END, 1e-9, 1e-11, count, LossKind::Mse);
    let (out, recs, _) = solve(&model, &data, &theta0, &opts, |_| false);
    // Intervals of one entry separated by less than 1e-6 are one slide (the solver sometimes
    // releases a sliding entry and re-pins it ~5e-8 later; see the ignored test below).
    let mut merged = merge_intervals(&out.events.intervals, 1e-6);
    merged.retain(|iv| iv.end < T_END - 0.5 && iv.start > 0.05);
    let iv = *merged
        .iter()
        .max_by(|a, b| (a.end - a.start).total_cmp(&(b.end - b.start)))
        .expect("some sliding interval ending before T");
    println!(
        "longest slide ending before T: entry {} on [{:.4}, {:.4}] ({} intervals in all)",
        iv.entry,
        iv.start,
        iv.end,
        out.events.intervals.len()
    );
    assert!(iv.end - iv.start > 1.0);
    let dt = T_END / count as f64;
    let (mut inside, mut max_in, mut max_before, mut max_after) = (0, 0.0f64, 0.0f64, 0.0f64);
    for (t, _, th) in &recs {
        let z = plain_z(&model, &data, th)[iv.entry];
        if *t > iv.start + dt && *t < iv.end - dt {
            inside += 1;
            max_in = max_in.max(z.abs());
        } else if *t < iv.start - dt {
            max_before = max_before.max(z.abs());
        } else if *t > iv.end + dt {
            max_after = max_after.max(z.abs());
        }
    }
    println!(
        "flow: max |z| while sliding {max_in:.3e} over {inside} outputs; max |z| before \
         {max_before:.3e}, after {max_after:.3e}"
    );
    assert!(inside > 40);
    assert!(max_in < 1e-8, "pinned pre-activation drifted to {max_in:e}");
    // It reached the kink in finite time and left it again (released), unlike the ≤ 1e-8 above.
    assert!(
        max_before > 1e-5,
        "the entry was at the kink before its slide"
    );
    assert!(
        max_after > 1e-5,
        "the entry stayed at the kink after its release"
    );

    // GD with η = 1e-4 over the same interval: z chatters about the kink with amplitude O(η).
    let eta = 1e-4;
    let epochs = (T_END / eta).round() as usize;
    let mut th = theta0.clone();
    let mut max_gd: f64 = 0.0;
    let mut k_in = 0;
    let margin = 0.2 * (iv.end - iv.start);
    let gd_opts = GdOptions {
        lr: eta,
        epochs,
        loss: LossKind::Mse,
        precision: gradflow::config::Precision::F64,
        track_kinks: false,
    };
    gradient_descent(&model, &data, &mut th, &gd_opts, |r, t| {
        if r.t > iv.start + margin && r.t < iv.end - margin && r.epoch % 10 == 0 {
            max_gd = max_gd.max(plain_z(&model, &data, t)[iv.entry].abs());
            k_in += 1;
        }
        Control::Continue
    })
    .expect("gd");
    println!(
        "GD η = {eta:e}: max |z| over the interior of the slide {max_gd:.3e} ({k_in} samples)"
    );
    assert!(k_in > 100);
    assert!(
        max_gd < eta,
        "GD does not stay within O(η) of the kink: {max_gd:e}"
    );
}

/// Sliding intervals of the same entry joined when the gap between them is below `gap`.
fn merge_intervals(
    intervals: &[gradflow::flow::SlidingInterval],
    gap: f64,
) -> Vec<gradflow::flow::SlidingInterval> {
    let mut sorted = intervals.to_vec();
    sorted.sort_by(|a, b| (a.entry, a.start).partial_cmp(&(b.entry, b.start)).unwrap());
    let mut out: Vec<gradflow::flow::SlidingInterval> = Vec::new();
    for iv in sorted {
        match out.last_mut() {
            Some(last) if last.entry == iv.entry && iv.start - last.end < gap => {
                last.end = last.end.max(iv.end)
            }
            _ => out.push(iv),
        }
    }
    out
}

/// Release-and-re-pin pairs a hair apart are artefacts of how simultaneous switching decisions
/// are ordered (a crossing entry's tentative constraint distorting the others' normal speeds).
/// Seed 0 at rtol 1e-9 had 9 such pairs among 26 slides before `switch` resolved arrivals first
/// and released one entry at a time; one remains (entries 77/127/159 at t ≈ 5.65285604: three
/// entries leave together and two come back 3e-8 later — choosing which of several entries
/// slide is a complementarity problem the one-at-a-time rule does not always solve). The test
/// keeps that count from growing back.
#[test]
fn no_spurious_release_and_repin() {
    let (model, data, theta0) = problem();
    let opts = FlowOptions::new(T_END, 1e-9, 1e-11, 1, LossKind::Mse);
    let (out, _, _) = solve(&model, &data, &theta0, &opts, |_| false);
    let merged = merge_intervals(&out.events.intervals, 1e-6);
    let spurious = out.events.intervals.len() - merged.len();
    println!(
        "{} intervals, {} after joining gaps < 1e-6; releases {}",
        out.events.intervals.len(),
        merged.len(),
        out.events.releases
    );
    assert!(spurious <= 1, "{spurious} release/re-pin pairs within 1e-6");
}

/// The sliding invariants, through `KinkSystem` directly, at a state the solver reports as
/// sliding (the solve stopped mid-slide; the pinned entries found as the pre-activations at
/// the kink, set as pinned, projected onto the kinks). DNN: rows ∇z_j from one-sample passes.
#[test]
fn kink_system_projection_invariants() {
    let (model, data, theta0) = problem();
    projection_invariants(&model, &data, &theta0, T_END, &|_, _| ALPHA);
}

/// The same invariants on a GCN 4 → [8, 8] → 2 (k-NN graph, k = 2), which mixes samples: the
/// rows ∇z_j come from full-batch seeded reverse passes instead. Here the two pinned entries are
/// the same unit of two samples with identical normalised neighbourhoods, so their
/// pre-activations coincide and the Gram matrix R Rᵀ has rank 1 (the pseudo-inverse case).
#[test]
fn kink_system_projection_invariants_gcn() {
    let data = Dataset::ball(10, 4, 2, 2);
    let graph = gradflow::graph::Graph::knn(&data.x, 2).expect("graph");
    let model = presets::gcn(
        std::sync::Arc::new(graph.normalized_adjacency()),
        4,
        &[8, 8],
        2,
        &Activation::leaky_relu(),
    );
    assert!(model.net.mixes_samples());
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 2);
    let (pinned, rank) = projection_invariants(&model, &data, &theta0, 5.0, &|_, _| ALPHA);
    assert_eq!(
        (pinned, rank),
        (2, 1),
        "expected two coinciding pinned entries"
    );
}

/// The same invariants with PReLU, whose left slope a is a trained parameter (one per layer,
/// tensors `1.weight` and `3.weight`): the effective slopes must lie between the *current* a of
/// the pinned entry's layer and 1.
#[test]
fn kink_system_projection_invariants_prelu() {
    let model = presets::dnn(4, &[8, 8], 2, &Activation::Prelu { init: 0.25 });
    let data = Dataset::ball(10, 4, 2, 2);
    let theta0 = init_params(&model.param_specs(), &InitScheme::Torch, 2);
    // Offsets of the two slope tensors in θ.
    let mut at = 0;
    let mut slope_at = Vec::new();
    for s in model.param_specs() {
        if s.name == "1.weight" || s.name == "3.weight" {
            slope_at.push(at);
        }
        at += s.len();
    }
    assert_eq!(slope_at.len(), 2);
    let entries_per_layer = 8 * data.n();
    projection_invariants(&model, &data, &theta0, 5.0, &|e, theta| {
        theta[slope_at[e / entries_per_layer]]
    });
}

/// `left_slope(entry, θ)`: σ'(0⁻) for the entry's layer at θ (the effective slopes must lie
/// between it and σ'(0⁺) = 1).
fn projection_invariants(
    model: &Model,
    data: &Dataset,
    theta0: &[f64],
    t_end: f64,
    left_slope: &dyn Fn(usize, &[f64]) -> f64,
) -> (usize, usize) {
    // Stop at the first output time with at least two entries pinned.
    let opts = FlowOptions::new(t_end, 1e-10, 1e-12, 200, LossKind::Mse);
    let (_, recs, _) = solve(model, data, theta0, &opts, |r| r.pinned >= 2);
    let (t_stop, k_pinned, mut theta) = recs.last().cloned().expect("records");
    assert!(k_pinned >= 2, "no output time with two pinned entries");
    let z0 = plain_z(model, data, &theta);
    let mut order: Vec<usize> = (0..z0.len()).collect();
    order.sort_by(|&a, &b| z0[a].abs().total_cmp(&z0[b].abs()));
    let mut pinned: Vec<usize> = order[..k_pinned].to_vec();
    pinned.sort();
    let next = z0[order[k_pinned]].abs();
    let worst = pinned.iter().map(|&e| z0[e].abs()).fold(0.0, f64::max);
    println!(
        "stopped at t = {t_stop}: {k_pinned} pinned {pinned:?}, |z| ≤ {worst:.2e}; next |z| {next:.2e}"
    );
    assert!(
        worst < 1e-7 && next > 1e-5,
        "pinned entries not identifiable"
    );

    // Set the pinned state up by hand and let the system project θ onto the kinks.
    let loss = LossKind::Mse;
    let (f, slopes, zl, zr) = {
        let mut sys = KinkSystem::new(model, data, loss, &theta, true).expect("system");
        assert_eq!(sys.entries(), z0.len());
        for &e in &pinned {
            sys.pieces[e] = 0; // the piece left of the knot at 0
        }
        sys.pinned = pinned.clone();
        sys.refresh();
        let mut f = vec![0.0; theta.len()];
        sys.evaluate(&theta, &mut f).expect("evaluate");
        sys.project_onto_knots(&mut theta);
        // Twice more: the effective slopes settle (they feed the upstream cotangents).
        sys.evaluate(&theta, &mut f).expect("evaluate");
        sys.evaluate(&theta, &mut f).expect("evaluate");
        for &e in &pinned {
            assert_eq!(sys.knot_of(e), 0.0);
        }
        (
            f,
            sys.last.slopes.clone(),
            sys.last.zdot_left.clone(),
            sys.last.zdot_right.clone(),
        )
        // sys dropped: the layers are uncontrolled again.
    };
    for l in activation_layers(model) {
        assert!(
            l.control.lock().is_none(),
            "KinkSystem must uninstall on drop"
        );
    }
    let z = plain_z(model, data, &theta);
    let on_kink = pinned.iter().map(|&e| z[e].abs()).fold(0.0, f64::max);
    println!("after projection: max |z_pinned| {on_kink:.2e}; slopes {slopes:?}");
    assert!(on_kink < 1e-12, "projection left |z| = {on_kink:e}");
    for j in 0..pinned.len() {
        assert!(
            zl[j] > 0.0 && zr[j] < 0.0,
            "entry {} is not sliding: ż⁻ {} ż⁺ {}",
            pinned[j],
            zl[j],
            zr[j]
        );
        assert!(
            slopes[j] >= left_slope(pinned[j], &theta) - 1e-9 && slopes[j] <= 1.0 + 1e-9,
            "effective slope {} of entry {} outside [α, 1]",
            slopes[j],
            pinned[j]
        );
    }

    // (a) Directional finite differences of the uncontrolled pre-activations along f.
    let fnorm = norm(&f);
    let eps = 1e-6 / fnorm;
    let zp = plain_z(model, data, &axpy(&theta, eps, &f));
    let zm = plain_z(model, data, &axpy(&theta, -eps, &f));
    let zdot: Vec<f64> = zp
        .iter()
        .zip(&zm)
        .map(|(a, b)| (a - b) / (2.0 * eps))
        .collect();

    // (b) Coordinate finite differences: the Jacobian of every z (rows) in θ (columns).
    let p = theta.len();
    let h = 1e-6;
    let mut jac = vec![vec![0.0; p]; z.len()];
    for k in 0..p {
        let mut tp = theta.clone();
        let mut tm = theta.clone();
        tp[k] += h;
        tm[k] -= h;
        let (a, b) = (plain_z(model, data, &tp), plain_z(model, data, &tm));
        for (row, (x, y)) in jac.iter_mut().zip(a.iter().zip(&b)) {
            row[k] = (x - y) / (2.0 * h);
        }
    }
    // Independent projection: g by ordinary backprop (uncontrolled), R from finite differences,
    // f_exp = −(g − Rᵀ (R Rᵀ)⁻¹ R g).
    let mut g = vec![0.0; p];
    model.loss_and_grad(&theta, &data.x, &data.y, loss, &mut g);
    let rows: Vec<&Vec<f64>> = pinned.iter().map(|&e| &jac[e]).collect();
    let k = rows.len();
    // μ = (R Rᵀ)⁺ R g by a pseudo-inverse: pinned entries may be duplicates (in a GCN two
    // samples with the same normalised neighbourhood have identical pre-activations).
    let gram = faer::Mat::<f64>::from_fn(k, k, |i, j| dot(rows[i], rows[j]));
    let eig = gram
        .self_adjoint_eigen(faer::Side::Lower)
        .expect("eigen-decomposition");
    let (u, lam) = (eig.U(), eig.S());
    let top = (0..k).map(|i| lam[i]).fold(0.0f64, f64::max);
    let rg: Vec<f64> = rows.iter().map(|r| dot(r, &g)).collect();
    let mut mu = faer::Mat::<f64>::zeros(k, 1);
    for l in (0..k).filter(|&l| lam[l] > 1e-10 * top) {
        let w: f64 = (0..k).map(|i| u[(i, l)] * rg[i]).sum::<f64>() / lam[l];
        for i in 0..k {
            mu[(i, 0)] += u[(i, l)] * w;
        }
    }
    let rank = (0..k).filter(|&l| lam[l] > 1e-10 * top).count();
    println!("{k} pinned rows of rank {rank}");
    let mut f_exp: Vec<f64> = g.iter().map(|v| -v).collect();
    for (i, r) in rows.iter().enumerate() {
        for (o, rv) in f_exp.iter_mut().zip(r.iter()) {
            *o += mu[(i, 0)] * rv;
        }
    }
    let f_err = norm(&axpy(&f, -1.0, &f_exp)) / fnorm;
    let g_off = norm(&axpy(&f, 1.0, &g)) / fnorm;
    println!(
        "‖f − f_exp‖/‖f‖ = {f_err:.2e}; the projection moves the field by ‖f + g‖/‖f‖ = {g_off:.2e}"
    );
    assert!(
        f_err < 1e-6,
        "projected field differs from −P⊥∇L by {f_err:e}"
    );
    assert!(g_off > 1e-3, "the projection should matter here");

    // Pinned: stationary. Unpinned: FD speed along f = ∇z·f, and ≠ 0 for most.
    let mut max_pinned: f64 = 0.0;
    let mut max_unpinned_err: f64 = 0.0;
    let mut moving = 0;
    let mut coupled = 0;
    for e in 0..z.len() {
        let scale = norm(&jac[e]) * fnorm;
        if pinned.binary_search(&e).is_ok() {
            max_pinned = max_pinned.max(zdot[e].abs() / scale);
        } else {
            let expect = dot(&jac[e], &f);
            max_unpinned_err = max_unpinned_err.max((zdot[e] - expect).abs() / scale);
            moving += (zdot[e].abs() > 1e-3 * scale) as usize;
            // ... which is not what the unprojected field −∇L would give.
            coupled += ((expect + dot(&jac[e], &g)).abs() > 1e-3 * scale) as usize;
        }
    }
    println!(
        "pinned max |ż|/(‖∇z‖‖f‖) {max_pinned:.2e}; unpinned FD vs ∇z·f {max_unpinned_err:.2e}; \
         {moving} of {} unpinned entries move, {coupled} feel the projection",
        z.len() - k
    );
    assert!(max_pinned < 1e-7, "pinned entries move: {max_pinned:e}");
    assert!(max_unpinned_err < 1e-6);
    assert!(moving > (z.len() - k) / 2);
    assert!(coupled > 0);

    // (c) Filippov: the ordinary gradient with σ'(z_j) := reported slope at the pinned entries
    // (installed by hand in the control slots, every other entry on the piece z lies in) equals
    // the projected field.
    let layers = activation_layers(model);
    let n = data.n();
    let mut offset = 0;
    for l in &layers {
        let len = l.dim * n;
        let mut pieces: Vec<u16> = z[offset..offset + len]
            .iter()
            .map(|&v| (v > 0.0) as u16)
            .collect();
        let mut pins = Vec::new();
        for (j, &e) in pinned.iter().enumerate() {
            if e >= offset && e < offset + len {
                pieces[e - offset] = PINNED;
                pins.push(Pin {
                    entry: e - offset,
                    knot: 0.0,
                    value_at_knot: 0.0,
                    slope: slopes[j],
                });
            }
        }
        *l.control.lock() = Some(ControlState {
            pieces,
            pins,
            ..Default::default()
        });
        offset += len;
    }
    let mut g_s = vec![0.0; p];
    model.loss_and_grad(&theta, &data.x, &data.y, loss, &mut g_s);
    for l in &layers {
        *l.control.lock() = None;
    }
    let fil = norm(&axpy(&f, 1.0, &g_s)) / fnorm;
    println!("Filippov: ‖f + ∇L(θ; reported slopes)‖/‖f‖ = {fil:.2e}");
    assert!(
        fil < 1e-6,
        "the reported slopes do not give the projected field: {fil:e}"
    );
    (k, rank)
}
