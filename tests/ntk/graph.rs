//! The structured graph NTK route (`ntk::graph_gram`) against independent routes: J Jᵀ from the
//! explicit per-output-vjp Jacobian for gcn, cheb (K = 2, 3) and graphconv networks of 1–3
//! hidden layers with several activations (PReLU's learnable slope included), and from a
//! finite-difference Jacobian on one case; exact symmetry; supports that cover the whole graph;
//! tiles cut down to one output row; a residual block; the route `gram` reports and its memory
//! estimate; the fallback for networks the walker cannot read.
use crate::common::jacobian_fd;

use faer::Mat;
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::{scaled_laplacian, Graph};
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{ActivationLayer, Dense, FanOutConcat, Layer, Propagate, Residual, Serial};
use gradflow::model::Model;
use gradflow::ntk::graph_gram::{graph_gram, graph_gram_tiled};
use gradflow::ntk::sparse_cot::Supports;
use gradflow::ntk::{self, GramRoute, NtkOptions};
use gradflow::presets;
use gradflow::Batch;
use std::sync::Arc;

fn max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut m: f64 = 0.0;
    for c in 0..a.ncols() {
        for r in 0..a.nrows() {
            m = m.max((a[(r, c)] - b[(r, c)]).abs());
        }
    }
    m
}

fn max_abs(a: &Mat<f64>) -> f64 {
    max_abs_diff(a, &Mat::zeros(a.nrows(), a.ncols()))
}

fn reference(model: &Model, theta: &[f64], x: &Batch) -> Mat<f64> {
    let j = ntk::jacobian(model, theta, x);
    &j * j.transpose()
}

/// The graph route against J Jᵀ (relative 1e-12), exact symmetry, and `gram`'s route.
fn check(name: &str, model: &Model, x: &Batch, seed: u64) -> Mat<f64> {
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, seed);
    assert_eq!(ntk::gram_route(model), GramRoute::StructuredGraph, "{name}");
    let h = graph_gram(model, &theta, x).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = reference(model, &theta, x);
    let scale = max_abs(&want);
    assert!(scale > 0.0, "{name}: zero kernel");
    let err = max_abs_diff(&h, &want);
    assert!(
        err <= 1e-12 * scale,
        "{name}: graph route vs vjp Jacobian, {err:e} of {scale:e}"
    );
    assert_eq!(max_abs_diff(&h, &h.transpose().to_owned()), 0.0, "{name}");
    let (h2, route) = ntk::gram(model, &theta, x);
    assert_eq!(route, GramRoute::StructuredGraph, "{name}: route taken");
    assert_eq!(max_abs_diff(&h, &h2), 0.0, "{name}: gram");
    h
}

fn activations() -> Vec<(&'static str, Activation)> {
    vec![
        ("relu", Activation::Relu),
        ("leaky", Activation::leaky_relu()),
        ("sigmoid", Activation::Sigmoid),
        ("prelu", Activation::Prelu { init: 0.25 }),
    ]
}

#[test]
fn graph_presets_match_the_jacobian_route() {
    let data = Dataset::ball(14, 3, 2, 11);
    let g = Graph::knn(&data.x, 3).unwrap();
    let a_hat = Arc::new(g.normalized_adjacency());
    let l_tilde = Arc::new(scaled_laplacian(&g, None));
    let adj = Arc::new(g.adjacency());
    let depths: [&[usize]; 3] = [&[5], &[4, 6], &[5, 3, 4]];
    let mut seed = 0;
    for (aname, act) in activations() {
        for hidden in depths {
            seed += 1;
            let cases = [
                ("gcn", presets::gcn(a_hat.clone(), 3, hidden, 2, &act)),
                (
                    "cheb K=2",
                    presets::cheb(l_tilde.clone(), 3, hidden, 2, 2, &act),
                ),
                (
                    "cheb K=3",
                    presets::cheb(l_tilde.clone(), 3, hidden, 3, 2, &act),
                ),
                (
                    "graphconv",
                    presets::graphconv(adj.clone(), 3, hidden, 2, &act),
                ),
            ];
            for (pname, model) in &cases {
                check(&format!("{pname} {aname} {hidden:?}"), model, &data.x, seed);
            }
        }
    }
}

#[test]
fn graph_route_matches_finite_differences() {
    let data = Dataset::ball(12, 3, 2, 5);
    let g = Graph::knn(&data.x, 3).unwrap();
    let model = presets::cheb(
        Arc::new(scaled_laplacian(&g, None)),
        3,
        &[4, 3],
        3,
        2,
        &Activation::Sigmoid,
    );
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 4);
    let h = graph_gram(&model, &theta, &data.x).unwrap();
    let jf = jacobian_fd(&model, &theta, &data.x);
    let want = &jf * jf.transpose();
    let scale = max_abs(&want);
    let err = max_abs_diff(&h, &want);
    assert!(
        err <= 1e-6 * scale,
        "finite differences: {err:e} of {scale:e}"
    );
}

/// Six propagations after the first dense layer of a GCN on a 12-node ring reach every node from
/// every node: that layer's cotangents are dense over the graph, and the route still matches.
#[test]
fn supports_covering_the_whole_graph() {
    let n = 12;
    let data = Dataset::ball(n, 3, 2, 9);
    // A ring: diameter 6, so k Â-hops from one node reach 2k + 1 nodes, six hops all 12.
    let g = Graph::from_edges(n, (0..n).map(|i| (i, (i + 1) % n)));
    let a_hat = Arc::new(g.normalized_adjacency());
    let mut s = Supports::singletons(n);
    let mut sizes = Vec::new();
    for _ in 0..6 {
        s = s.expand(&a_hat);
        sizes.push(s.total());
    }
    assert_eq!(sizes, vec![3 * n, 5 * n, 7 * n, 9 * n, 11 * n, n * n]);
    let model = presets::gcn(a_hat, 3, &[4, 3, 4, 3, 5, 4], 2, &Activation::leaky_relu());
    check("gcn on a ring, 7 propagations", &model, &data.x, 3);
}

/// Tiles of one output row (many tiles per layer, so lazy cotangents are materialised row block
/// by row block through propagations and activations) give the same H as one tile per layer.
#[test]
fn one_row_tiles_agree() {
    let data = Dataset::ball(16, 4, 3, 2);
    let g = Graph::knn(&data.x, 3).unwrap();
    let prelu = Activation::Prelu { init: 0.25 };
    let cases = [
        presets::graphconv(Arc::new(g.adjacency()), 4, &[6, 5], 3, &prelu),
        presets::gcn(
            Arc::new(g.normalized_adjacency()),
            4,
            &[6, 5],
            3,
            &Activation::leaky_relu(),
        ),
        presets::cheb(
            Arc::new(scaled_laplacian(&g, None)),
            4,
            &[5, 4],
            3,
            3,
            &Activation::Sigmoid,
        ),
    ];
    for model in &cases {
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 8);
        let whole = graph_gram(model, &theta, &data.x).unwrap();
        let rows = graph_gram_tiled(model, &theta, &data.x, 1).unwrap();
        let want = reference(model, &theta, &data.x);
        let scale = max_abs(&want);
        let name = model.preset_name();
        assert!(max_abs_diff(&whole, &rows) <= 1e-13 * scale, "{name}");
        assert!(max_abs_diff(&rows, &want) <= 1e-12 * scale, "{name}");
    }
}

/// A residual block of [propagate, dense, σ] inside a GCN.
#[test]
fn residual_graph_block() {
    let data = Dataset::ball(15, 3, 2, 4);
    let g = Graph::knn(&data.x, 3).unwrap();
    let a = Arc::new(g.normalized_adjacency());
    let act = Activation::leaky_relu();
    let w = 5;
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Propagate::new(a.clone(), 3)),
        Box::new(Dense::new(3, w)),
        Box::new(ActivationLayer::new(act.clone(), w)),
        Box::new(Residual::new(Box::new(Serial::new(vec![
            Box::new(Propagate::new(a.clone(), w)),
            Box::new(Dense::new(w, w)),
            Box::new(ActivationLayer::new(act.clone(), w)),
        ])))),
        Box::new(Propagate::new(a, w)),
        Box::new(Dense::new(w, 2)),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, act);
    check("residual gcn", &model, &data.x, 6);
}

/// The route in `ntk_spectrum`'s summary; the memory estimate counts at least H, stays within
/// a small factor of the Jacobian route's on a small network, and at the benchmark's size (GCN
/// 100 → [200, 200] → 10, kNN k = 10, n = 500) is below it.
#[test]
fn spectrum_reports_the_graph_route() {
    let data = Dataset::ball(40, 6, 3, 1);
    let g = Graph::knn(&data.x, 4).unwrap();
    let model = presets::gcn(
        Arc::new(g.normalized_adjacency()),
        6,
        &[30, 30],
        3,
        &Activation::leaky_relu(),
    );
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 2);
    let s = ntk::ntk_spectrum(&model, &theta, &data.x, &NtkOptions::default()).unwrap();
    assert_eq!(s.route.name(), "structured-graph");
    let nm = (40 * 3) as u64;
    let jacobian_bytes = nm * nm * 8 + nm * model.p() as u64 * 8;
    let bytes = ntk::gram_bytes(&model, 40);
    assert!(
        bytes > nm * nm * 8 && bytes < 2 * jacobian_bytes,
        "{bytes} vs {jacobian_bytes}"
    );
    check("gcn [30, 30]", &model, &data.x, 2);
    let n = 500;
    let big = Dataset::ball(n, 100, 10, 0);
    let g = Graph::knn(&big.x, 10).unwrap();
    let model = presets::gcn(
        Arc::new(g.normalized_adjacency()),
        100,
        &[200, 200],
        10,
        &Activation::leaky_relu(),
    );
    let nm = (n * 10) as u64;
    let jacobian_bytes = nm * nm * 8 + nm * model.p() as u64 * 8;
    let bytes = ntk::gram_bytes(&model, n);
    eprintln!("estimate {bytes} vs Jacobian {jacobian_bytes}");
    assert!(
        bytes > nm * nm * 8 && bytes < 2 * jacobian_bytes,
        "{bytes} vs {jacobian_bytes}"
    );
}

/// A composite the walker does not know (fan-out) sends the network to the Jacobian route.
#[test]
fn unknown_composites_fall_back_to_the_jacobian() {
    let data = Dataset::ball(10, 3, 2, 3);
    let g = Graph::knn(&data.x, 2).unwrap();
    let a = Arc::new(g.normalized_adjacency());
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Propagate::new(a, 3)),
        Box::new(FanOutConcat::new(vec![
            Box::new(Dense::new(3, 2)),
            Box::new(Dense::new(3, 2)),
        ])),
        Box::new(Dense::new(4, 2)),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, Activation::Relu);
    assert_eq!(ntk::gram_route(&model), GramRoute::Jacobian);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
    assert!(graph_gram(&model, &theta, &data.x).is_err());
    let (h, route) = ntk::gram(&model, &theta, &data.x);
    assert_eq!(route, GramRoute::Jacobian);
    assert!(max_abs_diff(&h, &reference(&model, &theta, &data.x)) <= 1e-12 * max_abs(&h));
}

/// A batch whose size differs from the graph's node count is an error of the graph route (no
/// panic), and the memory estimate then declines the route.
#[test]
fn mismatched_graph_is_an_error() {
    let data = Dataset::ball(12, 3, 2, 7);
    let g = Graph::knn(&data.x, 3).unwrap();
    let act = Activation::leaky_relu();
    let other = Dataset::ball(10, 3, 2, 7);
    for model in [
        presets::gcn(Arc::new(g.normalized_adjacency()), 3, &[4], 2, &act),
        presets::cheb(Arc::new(scaled_laplacian(&g, None)), 3, &[4], 3, 2, &act),
        presets::graphconv(Arc::new(g.adjacency()), 3, &[4], 2, &act),
    ] {
        let theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
        assert!(
            graph_gram(&model, &theta, &other.x).is_err(),
            "{}",
            model.preset_name()
        );
        assert!(ntk::graph_gram::graph_gram_bytes(&model, 10).is_none());
        assert!(ntk::graph_gram::graph_gram_bytes(&model, 12).is_some());
    }
}
