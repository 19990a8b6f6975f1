//! The gcn on the compiled route (forward passes, gradient, pre-activations and pinned
//! cotangents by the compiled passes with Â; rows by support-restricted passes on their
//! buffers) against the general layer path (the layers' own passes and sparse row passes), an
//! independent route through the same network: every quantity of an evaluation with pins in
//! both activation layers and free entries frozen on the wrong side of their kink.
//! Also the contract of `slopes_updated` in a network that mixes samples.

use super::*;
use crate::graph::Graph;
use crate::init::{init_params, InitScheme};
use crate::presets;
use std::sync::Arc;

/// A gcn 4 → [6, 5] → 2 on 12 nodes of a 3-NN graph, and θ.
fn gcn(act: &Activation) -> (Model, Dataset, Vec<f64>) {
    let data = Dataset::ball(12, 4, 2, 3);
    let graph = Graph::knn(&data.x, 3).expect("graph");
    let model = presets::gcn(Arc::new(graph.normalized_adjacency()), 4, &[6, 5], 2, act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 3);
    (model, data, theta)
}

/// max |a − b| over max |b| (the scale of the compared quantity).
fn gap(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let d = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    d / scale.max(f64::MIN_POSITIVE)
}

/// Everything one evaluation gives, by either route: loss, z, ∇L, cotangents at σ(z_j), the
/// projected field, the rows, the normal speeds; then L and z of a forward pass at θ + δ.
struct Seen {
    compiled: bool,
    loss: f64,
    z: Vec<f64>,
    grad: Vec<f64>,
    cot: Vec<f64>,
    field: Vec<f64>,
    rows: Vec<Vec<f64>>,
    zdot: Vec<f64>,
    moved_loss: f64,
    moved_z: Vec<f64>,
    loss_at: f64,
    /// Forward passes the evaluation made besides its gradient (the layer path's rows need one).
    row_forwards: u64,
}

fn evaluate_gcn(model: &Model, data: &Dataset, theta: &[f64], compiled: bool) -> Seen {
    let mut sys = KinkSystem::new(model, data, LossKind::Mse, theta, compiled).expect("system");
    let first = 12 * 6;
    // Pins of both layers, on neighbouring nodes (several per node).
    let pinned = vec![
        1,
        2,
        20,
        45,
        70,
        first + 3,
        first + 4,
        first + 17,
        first + 31,
    ];
    for (j, &e) in pinned.iter().enumerate() {
        sys.pieces[e] = 0;
        sys.pin_slopes.insert(e, 0.2 + 0.07 * j as f64);
    }
    // Free entries frozen on the other piece than θ puts them (evaluated on the continued one).
    for e in (0..sys.entries()).step_by(5) {
        if !pinned.contains(&e) {
            sys.pieces[e] = 1 - sys.pieces[e];
        }
    }
    sys.pinned = pinned;
    sys.refresh();
    let mut field = vec![0.0; theta.len()];
    let before = sys.counts;
    sys.evaluate(theta, &mut field).expect("evaluate");
    assert_eq!(sys.counts.sparse_row_passes - before.sparse_row_passes, 9);
    let row_forwards = sys.counts.forwards - before.forwards;
    let (loss, z) = (sys.last.loss, sys.last.z.clone());
    let (grad, cot) = (sys.grad.clone(), sys.cot.clone());
    let (rows, zdot) = (sys.last.rows.to_vecs(), sys.last.zdot_left.clone());
    let moved: Vec<f64> = theta
        .iter()
        .enumerate()
        .map(|(i, t)| t + 0.03 * ((i * 37 % 19) as f64 / 19.0 - 0.5))
        .collect();
    let moved_loss = sys.forward_z(&moved).expect("forward");
    let moved_z = sys.last.z.clone();
    let loss_at = sys.loss_at(&moved).expect("loss");
    Seen {
        compiled: sys.is_compiled(),
        loss,
        z,
        grad,
        cot,
        field,
        rows,
        zdot,
        moved_loss,
        moved_z,
        loss_at,
        row_forwards,
    }
}

fn compiled_equals_layer_path(act: &Activation) {
    let (model, data, theta) = gcn(act);
    let c = evaluate_gcn(&model, &data, &theta, true);
    let l = evaluate_gcn(&model, &data, &theta, false);
    assert!(c.compiled && !l.compiled, "routes not as requested");
    // The compiled rows read the gradient's buffers; the layer path's run a forward pass.
    assert_eq!((c.row_forwards, l.row_forwards), (0, 1));
    let rows_gap = c
        .rows
        .iter()
        .zip(&l.rows)
        .map(|(a, b)| gap(a, b))
        .fold(0.0f64, f64::max);
    println!(
        "{act}: loss {:.1e}, z {:.1e}, ∇L {:.1e}, cotangents {:.1e}, field {:.1e}, rows {:.1e}, \
         ż {:.1e}, moved z {:.1e}",
        gap(&[c.loss], &[l.loss]),
        gap(&c.z, &l.z),
        gap(&c.grad, &l.grad),
        gap(&c.cot, &l.cot),
        gap(&c.field, &l.field),
        rows_gap,
        gap(&c.zdot, &l.zdot),
        gap(&c.moved_z, &l.moved_z),
    );
    assert_eq!(c.cot.len(), 9);
    assert!(
        c.cot.iter().all(|v| *v != 0.0),
        "cotangents reach every pin"
    );
    assert!(gap(&[c.loss], &[l.loss]) < 1e-12);
    assert!(gap(&c.z, &l.z) < 1e-12);
    assert!(gap(&c.grad, &l.grad) < 1e-12);
    assert!(gap(&c.cot, &l.cot) < 1e-12);
    assert_eq!(c.rows.len(), 9);
    assert!(rows_gap < 1e-12);
    assert!(gap(&c.field, &l.field) < 1e-10);
    assert!(gap(&c.zdot, &l.zdot) < 1e-10);
    assert!(gap(&[c.moved_loss], &[l.moved_loss]) < 1e-12);
    assert!(gap(&[c.loss_at], &[l.loss_at]) < 1e-12);
    assert_eq!(c.moved_loss, c.loss_at);
    assert!(gap(&c.moved_z, &l.moved_z) < 1e-12);
    // The moved θ changed the pre-activations (the comparison is not of a stale z).
    assert!(gap(&c.moved_z, &c.z) > 1e-4);
}

#[test]
fn gcn_compiled_passes_equal_layer_path_leaky_relu() {
    compiled_equals_layer_path(&Activation::leaky_relu());
}

#[test]
fn gcn_compiled_passes_equal_layer_path_prelu() {
    compiled_equals_layer_path(&Activation::Prelu { init: 0.25 });
}

/// `slopes_updated` promises that when it is false, the evaluation's cotangents (hence normal
/// speeds and effective slopes) already hold for the slopes installed after it. In a gcn a
/// second-layer pin's slope reaches the first-layer pins of the neighbouring nodes: with one
/// pin in each layer on two neighbouring nodes (not the same one), both on their kink, the
/// first evaluation moves the second-layer slope and must say so, since evaluating again
/// changes the first-layer pin's speeds (through its cotangent).
#[test]
fn gcn_downstream_slope_of_a_neighbour_is_flagged() {
    let (model, data, mut theta) = gcn(&Activation::leaky_relu());
    let graph = Graph::knn(&data.x, 3).expect("graph");
    let a = graph.normalized_adjacency();
    let i = 0;
    let j = a
        .row(i)
        .map(|(j, _)| j)
        .find(|&j| j != i)
        .expect("a neighbour");
    // Unit 2 of node i in the first layer, unit 1 of node j in the second.
    let pinned = vec![i * 6 + 2, 12 * 6 + j * 5 + 1];
    // Put both on their kink (z = 0) by moving their units' biases, layer by layer, so that
    // no forward value depends on the pins' slopes (as in a solve, where pins sit on it).
    let plan = crate::engine::Plan::from_model(&model).expect("a gcn plan");
    for (stage, &e) in pinned.iter().enumerate() {
        let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, false).unwrap();
        sys.forward_z(&theta).unwrap();
        let st = &plan.stages[stage];
        let unit = (e - stage * 12 * 6) % st.out;
        theta[st.offset + st.out * st.inp + unit] -= sys.last.z[e];
    }
    for compiled in [true, false] {
        let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, compiled).unwrap();
        assert_eq!(sys.is_compiled(), compiled);
        assert!(pinned.iter().all(|&e| sys.last.z[e].abs() < 1e-14));
        for &e in &pinned {
            sys.pieces[e] = 0;
        }
        sys.pinned = pinned.clone();
        sys.refresh();
        let mut f = vec![0.0; theta.len()];
        sys.evaluate(&theta, &mut f).unwrap();
        let (flagged, speeds) = (sys.last.slopes_updated, sys.last.zdot_left.clone());
        let right = sys.last.zdot_right.clone();
        sys.evaluate(&theta, &mut f).unwrap();
        let (again, right_again) = (sys.last.zdot_left.clone(), sys.last.zdot_right.clone());
        let moved = (speeds[0] - again[0]).abs() / again[0].abs();
        println!("compiled = {compiled}: flagged {flagged}, first-layer ż⁻ moved by {moved:.1e}");
        assert!(
            moved > 1e-8,
            "the second-layer slope did not reach node {i}"
        );
        assert!(
            flagged,
            "compiled = {compiled}: a slope change reaching a pin went unflagged"
        );
        // The second-layer pin's speeds are the same (its row moved only along the first
        // pin's) up to their positive scale 1/‖∇z‖², which that move changes: signs and the
        // ratio of the two sides hold.
        let (ratio, ratio_again) = (speeds[1] / right[1], again[1] / right_again[1]);
        assert!(speeds[1] * again[1] > 0.0 && right[1] * right_again[1] > 0.0);
        assert!((ratio - ratio_again).abs() <= 1e-8 * ratio_again.abs());
    }
}
