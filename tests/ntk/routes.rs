//! NTK tests: the structured Gram matrix against independent routes (explicit Jacobian by
//! per-output vjp, and by central finite differences of the outputs), symmetry and positive
//! semi-definiteness, the rank bound rank(H) ≤ p, and Lanczos against the dense eigensolver.
use crate::common::jacobian_fd;

use faer::Mat;
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::model::Model;
use gradflow::ntk::{self, NtkOptions};
use gradflow::presets;
use std::sync::Arc;

fn setup(model: &Model, seed: u64) -> Vec<f64> {
    init_params(&model.param_specs(), &InitScheme::Torch, seed)
}

fn jjt(j: &Mat<f64>) -> Mat<f64> {
    j * j.transpose()
}

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

fn models(data: &Dataset) -> Vec<Model> {
    let act = Activation::leaky_relu();
    let (d, m) = (data.d(), data.m());
    let g = Graph::knn(&data.x, 3).unwrap();
    vec![
        presets::dnn(d, &[7, 5], m, &act),
        presets::dnn(d, &[6], m, &Activation::Prelu { init: 0.25 }),
        presets::dnn(d, &[6, 4], m, &Activation::Sigmoid),
        presets::resnet(d, 2, m, &act),
        presets::gcn(Arc::new(g.normalized_adjacency()), d, &[6, 5], m, &act),
    ]
}

#[test]
fn gram_matches_explicit_and_finite_difference_jacobians() {
    let data = Dataset::ball(7, 4, 3, 5);
    for model in models(&data) {
        let theta = setup(&model, 1);
        let (h, _) = ntk::gram(&model, &theta, &data.x);
        let h_vjp = jjt(&ntk::jacobian(&model, &theta, &data.x));
        let h_fd = jjt(&jacobian_fd(&model, &theta, &data.x));
        let scale = max_abs(&h_vjp);
        assert!(
            max_abs_diff(&h, &h_vjp) <= 1e-12 * scale,
            "{}: gram vs per-output vjp",
            model.preset_name()
        );
        assert!(
            max_abs_diff(&h, &h_fd) <= 1e-6 * scale,
            "{}: gram vs finite differences",
            model.preset_name()
        );
        // Symmetric and positive semi-definite.
        assert_eq!(max_abs_diff(&h, &h.transpose().to_owned()), 0.0);
        let eig = ntk::full_spectrum(&h);
        assert!(
            eig[0] >= -1e-10 * eig.last().unwrap(),
            "{}: negative eigenvalue {}",
            model.preset_name(),
            eig[0]
        );
    }
}

/// Large enough that the structured pass runs several 256-column tiles, with a tile edge that
/// cuts through a sample's m rows (nm = 3·130 = 390), against the per-output vjp route; and the
/// dense λ route (in-place Cholesky, block Krylov) against the full eigensolver.
#[test]
fn structured_gram_across_tiles_and_dense_extremes() {
    let data = Dataset::ball(130, 4, 3, 8);
    let act = Activation::leaky_relu();
    for model in [
        presets::dnn(4, &[40, 30], 3, &act),
        presets::resnet(4, 2, 3, &act),
    ] {
        let theta = setup(&model, 3);
        let (h, route) = ntk::gram(&model, &theta, &data.x);
        assert_eq!(route, ntk::GramRoute::Structured);
        let h_vjp = jjt(&ntk::jacobian(&model, &theta, &data.x));
        let scale = max_abs(&h_vjp);
        assert!(
            max_abs_diff(&h, &h_vjp) <= 1e-12 * scale,
            "{}: gram vs per-output vjp",
            model.preset_name()
        );
        let eig = ntk::full_spectrum(&h);
        let ext = ntk::dense_extremes_owned(h, 1e-10);
        // dnn: p = 1,523 ≥ nm, positive definite; resnet: p = 55 < nm, singular, so the failed
        // Cholesky must hand a restored H to the dense eigensolver.
        let want = if model.p() >= 390 {
            "cholesky+block-krylov"
        } else {
            "dense-eig"
        };
        assert_eq!(ext.method, want, "{}", model.preset_name());
        if ext.method == "cholesky+block-krylov" {
            // The reported accuracy is a true bound, and the value is the smallest eigenvalue.
            assert!(
                (ext.lambda_min - eig[0]).abs() <= ext.lambda_min_accuracy * (1.0 + 1e-9) + 1e-14,
                "{}: λ_min {} vs {} ± {}",
                model.preset_name(),
                ext.lambda_min,
                eig[0],
                ext.lambda_min_accuracy
            );
            assert!((ext.lambda_min - eig[0]).abs() <= 1e-8 * eig[0]);
        }
        let top = *eig.last().unwrap();
        assert!(
            (ext.lambda_max - top).abs() <= 1e-9 * top,
            "{}: λ_max",
            model.preset_name()
        );
        if ext.method == "dense-eig" {
            assert!((ext.lambda_min - eig[0]).abs() <= 1e-12 * top);
        }
    }
}

#[test]
fn structured_route_is_taken_for_sample_independent_networks() {
    let data = Dataset::ball(5, 3, 2, 1);
    let ms = models(&data);
    let routes: Vec<_> = ms.iter().map(ntk::gram_route).collect();
    assert_eq!(routes[0], ntk::GramRoute::Structured);
    assert_eq!(routes[3], ntk::GramRoute::Structured);
    assert_eq!(routes[4], ntk::GramRoute::StructuredGraph);
}

#[test]
fn rank_bound_decides_lambda_min() {
    // nm = 12·3 = 36. Under-parametrised: p = (4+1)·2 + (2+1)·3 = 19 < 36 ⇒ λ_min = 0 to rounding.
    // Over-parametrised: p = (4+1)·40 + (40+1)·3 = 323 ≥ 36 ⇒ λ_min > 0 on generic data.
    let data = Dataset::ball(12, 4, 3, 9);
    let act = Activation::leaky_relu();
    let under = presets::dnn(4, &[2], 3, &act);
    let over = presets::dnn(4, &[40], 3, &act);
    assert!(under.p() < 36 && over.p() >= 36);
    let opts = NtkOptions {
        full_spectrum: true,
        ..Default::default()
    };
    let su = ntk::ntk_spectrum(&under, &setup(&under, 2), &data.x, &opts).unwrap();
    let so = ntk::ntk_spectrum(&over, &setup(&over, 2), &data.x, &opts).unwrap();
    let eig_u = su.eigenvalues.unwrap();
    // At least nm − p eigenvalues vanish (rank ≤ p; rescaling symmetries of σ can lower it more).
    let zeros = eig_u
        .iter()
        .filter(|&&l| l.abs() <= 1e-10 * su.lambda_max)
        .count();
    assert!(
        zeros >= 36 - under.p(),
        "{zeros} zero eigenvalues, expected ≥ {}",
        36 - under.p()
    );
    assert!(su.lambda_min.abs() <= 1e-10 * su.lambda_max);
    assert!(
        so.lambda_min > 1e-8 * so.lambda_max,
        "over-parametrised λ_min = {}",
        so.lambda_min
    );
    assert_eq!(so.method, "cholesky+block-krylov");
    let eig_o = so.eigenvalues.unwrap();
    assert!((so.lambda_min - eig_o[0]).abs() <= 1e-8 * eig_o[0] + so.lambda_min_accuracy);
    assert!((so.lambda_max - eig_o[35]).abs() <= 1e-9 * eig_o[35]);
}

#[test]
fn matrix_free_lanczos_agrees_with_dense() {
    let data = Dataset::ball(30, 5, 2, 3);
    let act = Activation::leaky_relu();
    let model = presets::dnn(5, &[32, 32], 2, &act);
    let theta = setup(&model, 4);
    let dense = ntk::ntk_spectrum(
        &model,
        &theta,
        &data.x,
        &NtkOptions {
            full_spectrum: true,
            ..Default::default()
        },
    )
    .unwrap();
    // 1 MiB: too little for the dense H (≈ 2.6 MB with its working memory), enough matrix-free.
    let free = ntk::ntk_spectrum(
        &model,
        &theta,
        &data.x,
        &NtkOptions {
            memory_budget_bytes: 1 << 20,
            max_iter: 60,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(free.route.name(), "matrix-free");
    let eig = dense.eigenvalues.unwrap();
    assert!((free.lambda_max - eig[59]).abs() <= 1e-9 * eig[59]);
    // The reported accuracy is a true bound: some eigenvalue lies within it.
    let nearest = eig
        .iter()
        .map(|l| (l - free.lambda_min).abs())
        .fold(f64::INFINITY, f64::min);
    assert!(nearest <= free.lambda_min_accuracy * (1.0 + 1e-6) + 1e-12);
    assert!(
        (free.lambda_min - eig[0]).abs() <= 1e-6 * eig[0],
        "{} vs {}",
        free.lambda_min,
        eig[0]
    );
}
