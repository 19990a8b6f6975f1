//! The pinned rows ∇_θ z_j of a graph network by support-restricted reverse passes (the default
//! where the layers allow, `flow/system/graph_rows.rs`) against whole-batch seeded reverse passes
//! through the layers' own vjps (the general route): the rows, and the projected field built on
//! them, agree to rounding, on GCNs with leaky ReLU and PReLU and pins in both activation layers.

use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::flow::system::KinkSystem;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::loss::LossKind;
use gradflow::presets;
use std::sync::Arc;

fn rows_and_field(sparse: bool, act: &Activation) -> (Vec<Vec<f64>>, Vec<f64>, u64, u64) {
    let data = Dataset::ball(12, 4, 2, 3);
    let graph = Graph::knn(&data.x, 3).expect("graph");
    let model = presets::gcn(Arc::new(graph.normalized_adjacency()), 4, &[6, 5], 2, act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 3);
    let mut sys = KinkSystem::new(&model, &data, LossKind::Mse, &theta, false).expect("system");
    assert!(sys.has_sparse_graph_rows());
    sys.set_sparse_graph_rows(sparse);
    // Entries of the first layer (12 nodes × 6 units) and of the second (12 × 5), several nodes.
    let pinned: Vec<usize> = vec![1, 20, 45, 70, 72 + 3, 72 + 17, 72 + 31, 72 + 58];
    for &e in &pinned {
        // Freeze the piece left of the knot (the entry is evaluated linearly through it).
        sys.pieces[e] = 0;
    }
    sys.pinned = pinned;
    sys.refresh();
    let mut f = vec![0.0; theta.len()];
    sys.evaluate(&theta, &mut f).expect("evaluate");
    let c = sys.counts;
    (
        sys.last_rows().to_vecs(),
        f,
        c.sparse_row_passes,
        c.seeded_full_passes,
    )
}

fn check(act: &Activation) {
    let (sparse_rows, sparse_f, sparse_passes, full_in_sparse) = rows_and_field(true, act);
    let (full_rows, full_f, sparse_in_full, full_passes) = rows_and_field(false, act);
    assert!(
        sparse_passes >= 8 && full_in_sparse == 0,
        "the sparse route ran"
    );
    assert!(
        full_passes >= 8 && sparse_in_full == 0,
        "the whole-batch route ran"
    );
    let scale = full_rows
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let mut gap = 0.0f64;
    let mut nonzero_deep = 0;
    for (j, (a, b)) in sparse_rows.iter().zip(&full_rows).enumerate() {
        for (x, y) in a.iter().zip(b) {
            gap = gap.max((x - y).abs());
        }
        if j >= 4 {
            // Second-layer rows reach the first layer's weights through the propagation.
            nonzero_deep += b[..4 * 6].iter().filter(|v| **v != 0.0).count();
        }
    }
    println!("{act}: rows agree to {gap:.2e} (largest entry {scale:.3e})");
    assert!(nonzero_deep > 0, "deep rows must reach the first layer");
    assert!(gap <= 1e-13 * scale, "rows differ by {gap:e}");
    let fs = sparse_f.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let fgap = sparse_f
        .iter()
        .zip(&full_f)
        .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
    assert!(fgap <= 1e-12 * fs, "projected fields differ by {fgap:e}");
}

#[test]
fn sparse_graph_rows_equal_whole_batch_rows_leaky_relu() {
    check(&Activation::leaky_relu());
}

#[test]
fn sparse_graph_rows_equal_whole_batch_rows_prelu() {
    check(&Activation::Prelu { init: 0.25 });
}
