//! Datasets (the paper's unit-ball data, user arrays) and graphs (kNN, normalised adjacency),
//! against distributional facts and by-hand dense computations.

use crate::common;

use common::{random_batch, rng};
use gradflow::data::Dataset;
use gradflow::graph::Graph;
use gradflow::{Batch, Error};
use std::path::Path;

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|a| a * a).sum::<f64>().sqrt()
}

#[test]
fn ball_inputs_lie_in_the_unit_ball_with_the_right_shapes() {
    let ds = Dataset::ball(500, 7, 3, 1);
    assert_eq!((ds.n(), ds.d(), ds.m()), (500, 7, 3));
    assert_eq!((ds.x.features(), ds.x.n()), (7, 500));
    assert_eq!((ds.y.features(), ds.y.n()), (3, 500));
    for i in 0..ds.n() {
        let r = norm(ds.x.col(i));
        assert!(r <= 1.0 + 1e-12, "sample {i} has norm {r}");
        assert!(r > 0.0);
    }
    assert!(ds.x.all_finite() && ds.y.all_finite());
}

#[test]
fn ball_radius_distribution_passes_kolmogorov_smirnov() {
    // Uniform in the unit ball of R^d ⇔ P(‖x‖ ≤ s) = s^d.
    let (n, d) = (4000, 5);
    let ds = Dataset::ball(n, d, 2, 7);
    let mut r: Vec<f64> = (0..n).map(|i| norm(ds.x.col(i))).collect();
    r.sort_by(f64::total_cmp);
    let mut ks = 0.0_f64;
    for (i, &s) in r.iter().enumerate() {
        let f = s.powi(d as i32);
        let lo = i as f64 / n as f64;
        let hi = (i + 1) as f64 / n as f64;
        ks = ks.max((f - lo).abs()).max((hi - f).abs());
    }
    let crit = 1.63 / (n as f64).sqrt();
    assert!(ks < crit, "KS distance {ks} ≥ {crit}");

    // The statistic does detect a wrong law: radius uniform on [0, 1] (s^1) fails badly.
    let mut ks_wrong = 0.0_f64;
    for (i, &s) in r.iter().enumerate() {
        ks_wrong = ks_wrong.max((s - (i + 1) as f64 / n as f64).abs());
    }
    assert!(ks_wrong > 10.0 * crit);
}

#[test]
fn ball_directions_are_isotropic() {
    // u = x/‖x‖ uniform on the sphere: E u = 0, E u uᵀ = I/d.
    let (n, d) = (4000, 5);
    let ds = Dataset::ball(n, d, 1, 3);
    let mut mean = vec![0.0; d];
    let mut second = vec![0.0; d * d];
    for i in 0..n {
        let x = ds.x.col(i);
        let r = norm(x);
        for a in 0..d {
            mean[a] += x[a] / r / n as f64;
            for b in 0..d {
                second[a * d + b] += x[a] * x[b] / (r * r) / n as f64;
            }
        }
    }
    // sd of a mean component: sqrt(1/(d n)) ≈ 0.007; 5 sd.
    for (a, m) in mean.iter().enumerate() {
        assert!(m.abs() < 0.035, "mean direction component {a} = {m}");
    }
    // sd of E u_a²: sqrt((3/(d(d+2)) − 1/d²)/n) ≈ 0.0034; of E u_a u_b: sqrt(1/(d(d+2)n)) ≈ 0.0027.
    for a in 0..d {
        for b in 0..d {
            let want = if a == b { 1.0 / d as f64 } else { 0.0 };
            let got = second[a * d + b];
            assert!(
                (got - want).abs() < 0.02,
                "E u_{a} u_{b} = {got}, expected {want}"
            );
        }
    }
}

#[test]
fn ball_targets_are_standard_normal() {
    let ds = Dataset::ball(2000, 3, 5, 11);
    let y = ds.y.as_slice();
    let k = y.len() as f64; // 10,000 draws
    let mean = y.iter().sum::<f64>() / k;
    let var = y.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (k - 1.0);
    let fourth = y.iter().map(|v| v.powi(4)).sum::<f64>() / k;
    assert!(mean.abs() < 5.0 / k.sqrt(), "mean {mean}");
    // sd of the sample variance ≈ sqrt(2/k) ≈ 0.014.
    assert!((var - 1.0).abs() < 0.07, "variance {var}");
    // Normal, not e.g. uniform with variance 1 (fourth moment 1.8): E y⁴ = 3.
    assert!((fourth - 3.0).abs() < 0.4, "fourth moment {fourth}");
    // Per-output means too.
    for a in 0..5 {
        let ma: f64 = (0..2000).map(|i| ds.y.col(i)[a]).sum::<f64>() / 2000.0;
        assert!(ma.abs() < 5.0 / 2000f64.sqrt(), "output {a} mean {ma}");
    }
}

#[test]
fn ball_is_reproducible_and_seed_dependent() {
    let a = Dataset::ball(50, 4, 2, 42);
    let b = Dataset::ball(50, 4, 2, 42);
    let c = Dataset::ball(50, 4, 2, 43);
    assert_eq!(a.x.as_slice(), b.x.as_slice());
    assert_eq!(a.y.as_slice(), b.y.as_slice());
    assert_ne!(a.x.as_slice(), c.x.as_slice());
    assert_ne!(a.y.as_slice(), c.y.as_slice());
    // Inputs and targets come from independent streams: not the same numbers.
    assert_ne!(&a.x.as_slice()[..8], &a.y.as_slice()[..8]);
}

fn labels() -> (&'static Path, &'static Path) {
    (Path::new("x.npy"), Path::new("y.npy"))
}

#[test]
fn from_rows_wraps_row_major_arrays() {
    let (xl, yl) = labels();
    // x is 3 × 2 row-major, y is 3 × 1.
    let ds = Dataset::from_rows(
        vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        (3, 2),
        vec![7.0, 8.0, 9.0],
        (3, 1),
        xl,
        yl,
    )
    .unwrap();
    assert_eq!((ds.n(), ds.d(), ds.m()), (3, 2, 1));
    assert_eq!(ds.x.col(1), &[3.0, 4.0]);
    assert_eq!(ds.y.col(2), &[9.0]);
}

#[test]
fn from_rows_rejects_nan_with_its_position() {
    let (xl, yl) = labels();
    let mut x = vec![0.5; 4 * 3];
    x[2 * 3 + 1] = f64::NAN; // row 2, column 1
    let err = Dataset::from_rows(x, (4, 3), vec![0.0; 4], (4, 1), xl, yl).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Input { .. }), "{err:?}");
    assert!(msg.contains("x.npy"), "{msg}");
    assert!(
        msg.contains("[2, 1]"),
        "message should name row 2, col 1: {msg}"
    );
    assert!(msg.contains("NaN"), "{msg}");

    // An infinity in y, row 3 column 0 of a 4 × 2 array.
    let mut y = vec![0.0; 4 * 2];
    y[3 * 2] = f64::INFINITY;
    let err = Dataset::from_rows(vec![0.0; 4], (4, 1), y, (4, 2), xl, yl).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("y.npy") && msg.contains("[3, 0]"), "{msg}");
}

#[test]
fn from_rows_rejects_mismatched_and_empty_arrays() {
    let (xl, yl) = labels();
    let err = Dataset::from_rows(vec![0.0; 6], (3, 2), vec![0.0; 4], (4, 1), xl, yl).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains('4') && msg.contains('3'), "{msg}");
    assert!(
        Dataset::from_rows(vec![], (0, 2), vec![], (0, 1), xl, yl).is_err(),
        "n = 0 must be rejected"
    );
    assert!(
        Dataset::from_rows(vec![], (3, 0), vec![0.0; 3], (3, 1), xl, yl).is_err(),
        "d = 0 must be rejected"
    );
    assert!(
        Dataset::from_rows(vec![0.0; 3], (3, 1), vec![], (3, 0), xl, yl).is_err(),
        "m = 0 must be rejected"
    );
}

/// Brute-force k nearest neighbours of i (ties by the smaller index).
fn nearest(x: &Batch, i: usize, k: usize) -> Vec<usize> {
    let mut d: Vec<(f64, usize)> = (0..x.n())
        .filter(|&j| j != i)
        .map(|j| {
            let s: f64 = x
                .col(i)
                .iter()
                .zip(x.col(j))
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            (s, j)
        })
        .collect();
    d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    d[..k].iter().map(|p| p.1).collect()
}

fn dense_adjacency(g: &Graph) -> Vec<f64> {
    let mut a = vec![0.0; g.n * g.n];
    for &(i, j) in &g.edges {
        a[i * g.n + j] = 1.0;
        a[j * g.n + i] = 1.0;
    }
    a
}

#[test]
fn knn_graph_is_the_symmetrised_nearest_neighbour_relation() {
    for (seed, &(n, d, k)) in [(20, 3, 3), (15, 2, 1), (12, 4, 5)].iter().enumerate() {
        let x = random_batch(&mut rng(seed as u64), d, n);
        let g = Graph::knn(&x, k).unwrap();
        assert_eq!(g.n, n);
        let a = dense_adjacency(&g);
        for &(i, j) in &g.edges {
            assert!(i < j, "edges are stored once with i < j, got ({i}, {j})");
        }
        let mut sorted = g.edges.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), g.edges.len(), "duplicate edges");
        let nn: Vec<Vec<usize>> = (0..n).map(|i| nearest(&x, i, k)).collect();
        for i in 0..n {
            assert_eq!(a[i * n + i], 0.0, "self loop at {i}");
            let degree: f64 = (0..n).map(|j| a[i * n + j]).sum();
            assert!(degree >= k as f64, "node {i} has degree {degree} < k = {k}");
            for j in 0..n {
                assert_eq!(a[i * n + j], a[j * n + i]);
                let want = i != j && (nn[i].contains(&j) || nn[j].contains(&i));
                assert_eq!(a[i * n + j] == 1.0, want, "edge ({i}, {j})");
            }
        }
    }
}

#[test]
fn knn_rejects_bad_k() {
    let x = random_batch(&mut rng(5), 2, 6);
    for k in [0, 6, 7] {
        let err = Graph::knn(&x, k).unwrap_err();
        assert!(err.to_string().contains("k"), "{err}");
    }
    assert!(Graph::knn(&x, 5).is_ok());
    // k = n − 1 gives the complete graph.
    assert_eq!(Graph::knn(&x, 5).unwrap().edges.len(), 15);
}

#[test]
fn normalized_adjacency_matches_dense_formula() {
    let n = 9;
    let x = random_batch(&mut rng(77), 3, n);
    let g = Graph::knn(&x, 2).unwrap();
    let a = dense_adjacency(&g);
    // Ã = A + I, D̃ = row sums of Ã, Â = D̃^{-1/2} Ã D̃^{-1/2}.
    let mut at = a.clone();
    for i in 0..n {
        at[i * n + i] += 1.0;
    }
    let deg: Vec<f64> = (0..n)
        .map(|i| (0..n).map(|j| at[i * n + j]).sum())
        .collect();
    let got = g.normalized_adjacency();
    assert_eq!(got.n(), n);
    let dense = got.to_dense();
    for i in 0..n {
        for j in 0..n {
            let want = at[i * n + j] / (deg[i] * deg[j]).sqrt();
            assert!(
                (dense[i * n + j] - want).abs() < 1e-15,
                "Â[{i},{j}] = {}, expected {want}",
                dense[i * n + j]
            );
        }
    }
    assert_eq!(got.nnz(), n + 2 * g.edges.len());
    // Spectral sanity: D̃^{1/2}·1 is an eigenvector of Â with eigenvalue 1.
    for i in 0..n {
        let s: f64 = (0..n).map(|j| dense[i * n + j] * deg[j].sqrt()).sum();
        assert!((s - deg[i].sqrt()).abs() < 1e-12);
    }
}

#[test]
fn from_edges_symmetrises_and_drops_self_loops() {
    let g = Graph::from_edges(4, vec![(1, 0), (0, 1), (2, 2), (3, 1), (1, 3)]);
    assert_eq!(g.edges, vec![(0, 1), (1, 3)]);
    let dense = g.normalized_adjacency().to_dense();
    // Node 2 is isolated: Â_22 = 1. Node 1 has degree 2 + 1 = 3, node 0 has 2.
    assert_eq!(dense[2 * 4 + 2], 1.0);
    assert!((dense[1] - 1.0 / (2.0f64 * 3.0).sqrt()).abs() < 1e-15);
    assert!((dense[4 + 1] - 1.0 / 3.0).abs() < 1e-15);
}
