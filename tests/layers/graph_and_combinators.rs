//! ChebConv, GraphConv and the branching combinators (FanOutConcat, Parallel, SharedPair):
//! the `Layer` contract by finite differences (`common::check_layer`), forward passes against
//! independent dense computations (Chebyshev polynomials formed densely, hand loops, the tower
//! applied twice by hand), the graph operators against their dense formulas, tensor names, the
//! forwarding of kink diagnostics and non-finite location, and the NTK of networks built from
//! them against J Jᵀ with J by central finite differences.

use crate::common;
use crate::common::jacobian_fd;

use common::{check_layer, min_kink_distance, random_batch, rng, uniform_vec};
use faer::Mat;
use gradflow::activation::Activation;
use gradflow::graph::{scaled_laplacian, Graph, SparseMatrix};
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::activation::ControlState;
use gradflow::layers::{
    ActivationLayer, ChebConv, Dense, FanOutConcat, GraphConv, Layer, PairCombine, Parallel,
    Serial, SharedPair, Structure,
};
use gradflow::model::Model;
use gradflow::ntk;
use gradflow::Batch;
use std::sync::Arc;

fn leaky() -> Activation {
    Activation::LeakyRelu { slope: 0.2 }
}

/// A kNN graph (k = 2) on `n` random points in R².
fn knn_graph(n: usize, seed: u64) -> Graph {
    Graph::knn(&random_batch(&mut rng(seed), 2, n), 2).unwrap()
}

/// A hand-made graph on 5 nodes: a triangle 0–1–2, a pendant 3 on 2, and 4 on 3.
fn small_graph() -> Graph {
    Graph::from_edges(5, vec![(0, 1), (1, 2), (2, 0), (2, 3), (3, 4)])
}

/// Dense n × n matrix (row-major) of a sparse one.
fn dense(a: &SparseMatrix) -> Vec<f64> {
    a.to_dense()
}

fn matmul_sq(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let mut c = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            for j in 0..n {
                c[i * n + j] += a[i * n + k] * b[k * n + j];
            }
        }
    }
    c
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .fold(0.0_f64, |m, (x, y)| m.max((x - y).abs()))
}

fn dense_act(d: usize, act: Activation) -> Box<dyn Layer> {
    Box::new(Serial::new(vec![
        Box::new(Dense::new(d, d + 1)),
        Box::new(ActivationLayer::new(act, d + 1)),
    ]))
}

fn tower(d: usize, hidden: usize, e: usize, act: Activation) -> Box<dyn Layer> {
    Box::new(Serial::new(vec![
        Box::new(Dense::new(d, hidden)),
        Box::new(ActivationLayer::new(act, hidden)),
        Box::new(Dense::new(hidden, e)),
    ]))
}

// ---------------------------------------------------------------------------------------------
// Graph operators.

#[test]
fn scaled_laplacian_matches_the_dense_formula() {
    // Node 5 is isolated: D^{−1/2} = 0 there, so L_55 = 1 (PyG's convention).
    let mut graphs = vec![
        small_graph(),
        Graph::from_edges(6, vec![(0, 1), (1, 2), (3, 4)]),
    ];
    graphs.push(knn_graph(9, 3));
    for g in &graphs {
        let n = g.n;
        let mut a = vec![0.0; n * n];
        for &(i, j) in &g.edges {
            a[i * n + j] = 1.0;
            a[j * n + i] = 1.0;
        }
        let deg: Vec<f64> = (0..n).map(|i| (0..n).map(|j| a[i * n + j]).sum()).collect();
        for lambda in [None, Some(1.5), Some(2.7)] {
            let lam = lambda.unwrap_or(2.0);
            let mut expect = vec![0.0; n * n];
            for i in 0..n {
                for j in 0..n {
                    let s = |d: f64| if d > 0.0 { d.powf(-0.5) } else { 0.0 };
                    let l = f64::from(u8::from(i == j)) - s(deg[i]) * a[i * n + j] * s(deg[j]);
                    expect[i * n + j] = 2.0 * l / lam - f64::from(u8::from(i == j));
                }
            }
            let got = dense(&scaled_laplacian(g, lambda));
            assert!(
                max_abs_diff(&got, &expect) < 1e-14,
                "λ_max = {lambda:?}, graph {g:?}"
            );
        }
        // Default λ_max = 2: L̃ = −D^{−1/2} A D^{−1/2}, no diagonal stored.
        let lt = scaled_laplacian(g, None);
        assert_eq!(lt.nnz(), 2 * g.edges.len());
    }
}

#[test]
#[should_panic(expected = "must be finite and positive")]
fn scaled_laplacian_rejects_a_non_positive_lambda_max() {
    scaled_laplacian(&small_graph(), Some(0.0));
}

#[test]
fn adjacency_has_symmetric_ones_on_edges() {
    let g = small_graph();
    let a = dense(&g.adjacency());
    let n = g.n;
    for i in 0..n {
        assert_eq!(a[i * n + i], 0.0, "no self-loops");
        for j in 0..n {
            let edge = g.edges.contains(&(i.min(j), i.max(j))) && i != j;
            assert_eq!(a[i * n + j], f64::from(u8::from(edge)), "({i}, {j})");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ChebConv.

#[test]
fn chebconv_derivatives_on_knn_and_hand_made_graphs() {
    let graphs = [(knn_graph(7, 11), None), (small_graph(), Some(1.5))];
    for (gi, (g, lambda)) in graphs.iter().enumerate() {
        let lt = Arc::new(scaled_laplacian(g, *lambda));
        for k in 1..=4 {
            let layer = ChebConv::new(3, 2, k, lt.clone());
            assert_eq!(layer.num_params(), k * 3 * 2 + 2);
            let r = check_layer(&layer, g.n, 1000 + 10 * gi as u64 + k as u64);
            assert_eq!(r.checked_params, layer.num_params());
            assert_eq!(r.checked_inputs, 3 * g.n);
        }
    }
}

#[test]
fn chebconv_matches_dense_chebyshev_polynomials() {
    // K = 3 on L̃ of a kNN graph, and on a non-symmetric matrix (catches a swapped transpose).
    let g = knn_graph(6, 21);
    let n = g.n;
    let mut r = rng(22);
    let nonsym: Vec<(usize, usize, f64)> = (0..n)
        .flat_map(|i| [(i, (i + 1) % n), (i, (i + 3) % n), (i, i)])
        .map(|(i, j)| (i, j, uniform_vec(&mut r, 1, -1.0, 1.0)[0]))
        .collect();
    let mats = [
        scaled_laplacian(&g, None),
        SparseMatrix::from_triplets(n, nonsym),
    ];
    let (inp, out, k_order) = (3, 4, 3);
    for (mi, m) in mats.into_iter().enumerate() {
        let layer = ChebConv::new(inp, out, k_order, Arc::new(m.clone()));
        let theta = uniform_vec(&mut rng(30 + mi as u64), layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut rng(40 + mi as u64), inp, n);
        // T_0 = I, T_1 = L̃, T_2 = 2 L̃² − I, formed densely.
        let lt = dense(&m);
        let mut eye = vec![0.0; n * n];
        (0..n).for_each(|i| eye[i * n + i] = 1.0);
        let l2 = matmul_sq(&lt, &lt, n);
        let t2: Vec<f64> = l2.iter().zip(&eye).map(|(a, e)| 2.0 * a - e).collect();
        let ts = [eye, lt, t2];
        // PyG: Y[i, o] = Σ_k Σ_j T_k[i, j] Σ_f X[j, f] W_k[o, f] + b[o].
        let w = |k: usize, o: usize, f: usize| theta[k * out * inp + o * inp + f];
        let b = &theta[k_order * out * inp..];
        let y = layer.forward(&theta, &x).0;
        for i in 0..n {
            for (o, &bo) in b.iter().enumerate() {
                let mut v = bo;
                for (k, t) in ts.iter().enumerate() {
                    for j in 0..n {
                        for f in 0..inp {
                            v += t[i * n + j] * x.col(j)[f] * w(k, o, f);
                        }
                    }
                }
                let got = y.col(i)[o];
                assert!(
                    (got - v).abs() < 1e-12,
                    "matrix {mi}, node {i}, out {o}: {got} vs {v}"
                );
            }
        }
    }
}

#[test]
fn chebconv_of_order_one_is_a_dense_layer() {
    let g = small_graph();
    let cheb = ChebConv::new(3, 2, 1, Arc::new(scaled_laplacian(&g, None)));
    let theta = uniform_vec(&mut rng(5), 8, -1.0, 1.0);
    let x = random_batch(&mut rng(6), 3, g.n);
    let y1 = cheb.forward(&theta, &x).0;
    let y2 = Dense::new(3, 2).forward(&theta, &x).0;
    assert!(max_abs_diff(y1.as_slice(), y2.as_slice()) < 1e-15);
}

// ---------------------------------------------------------------------------------------------
// GraphConv.

#[test]
fn graphconv_derivatives_on_knn_and_hand_made_graphs() {
    for (gi, g) in [knn_graph(8, 12), small_graph()].iter().enumerate() {
        let layer = GraphConv::new(3, 2, Arc::new(g.adjacency()));
        assert_eq!(layer.num_params(), 2 * (2 * 3 + 1));
        let r = check_layer(&layer, g.n, 2000 + gi as u64);
        assert_eq!(r.checked_params, layer.num_params());
    }
}

#[test]
fn graphconv_matches_a_hand_loop() {
    let g = small_graph();
    let (inp, out) = (3, 2);
    let layer = GraphConv::new(inp, out, Arc::new(g.adjacency()));
    let theta = uniform_vec(&mut rng(7), layer.num_params(), -1.0, 1.0);
    let x = random_batch(&mut rng(8), inp, g.n);
    let w_rel = &theta[..out * inp];
    let b = &theta[out * inp..out * inp + out];
    let w_root = &theta[out * inp + out..];
    let y = layer.forward(&theta, &x).0;
    for i in 0..g.n {
        // Σ_{j ∈ N(i)} h_j from the edge list.
        let mut s = vec![0.0; inp];
        for &(a, c) in &g.edges {
            let j = if a == i {
                c
            } else if c == i {
                a
            } else {
                continue;
            };
            for (sf, xf) in s.iter_mut().zip(x.col(j)) {
                *sf += xf;
            }
        }
        for o in 0..out {
            let mut v = b[o];
            for f in 0..inp {
                v += w_root[o * inp + f] * x.col(i)[f] + w_rel[o * inp + f] * s[f];
            }
            assert!((y.col(i)[o] - v).abs() < 1e-13, "node {i}, out {o}");
        }
    }
}

#[test]
fn graph_layers_use_pyg_tensor_names() {
    let g = small_graph();
    let cheb = ChebConv::new(3, 2, 3, Arc::new(scaled_laplacian(&g, None)));
    let names: Vec<_> = cheb.param_specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["lins.0.weight", "lins.1.weight", "lins.2.weight", "bias"]
    );
    assert!(cheb.mixes_samples());
    let gc = GraphConv::new(3, 2, Arc::new(g.adjacency()));
    let specs = gc.param_specs();
    let names: Vec<_> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["lin_rel.weight", "lin_rel.bias", "lin_root.weight"]);
    assert_eq!(specs[0].shape, [2, 3]);
    assert!(gc.mixes_samples());
}

// ---------------------------------------------------------------------------------------------
// Combinators.

fn fan_out(d: usize, three: bool) -> FanOutConcat {
    let mut branches: Vec<Box<dyn Layer>> = vec![
        Box::new(Dense::new(d, 2)),
        dense_act(d, Activation::Prelu { init: 0.25 }),
    ];
    if three {
        branches.push(Box::new(ActivationLayer::new(leaky(), d)));
    }
    FanOutConcat::new(branches)
}

fn parallel() -> Parallel {
    Parallel::new(vec![
        (2, dense_act(2, leaky())),
        (3, Box::new(Dense::new(3, 2))),
        (1, Box::new(ActivationLayer::new(leaky(), 1))),
    ])
}

#[test]
fn fan_out_concat_derivatives_and_forward() {
    for (i, three) in [false, true].into_iter().enumerate() {
        let layer = fan_out(3, three);
        assert_eq!(layer.out_dim(), 2 + 4 + if three { 3 } else { 0 });
        assert!(!layer.mixes_samples());
        check_layer(&layer, 4, 3000 + i as u64);
        // Forward = the branches' outputs stacked along features.
        let theta = uniform_vec(&mut rng(9), layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut rng(10), 3, 4);
        let y = layer.forward(&theta, &x).0;
        let (mut at, mut row) = (0, 0);
        for b in &layer.branches {
            let yb = b.forward(&theta[at..at + b.num_params()], &x).0;
            assert_eq!(y.rows(row, b.out_dim()), yb);
            at += b.num_params();
            row += b.out_dim();
        }
    }
    let names: Vec<_> = fan_out(3, true)
        .param_specs()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        names,
        [
            "branches.0.weight",
            "branches.0.bias",
            "branches.1.0.weight",
            "branches.1.0.bias",
            "branches.1.1.weight"
        ]
    );
}

#[test]
fn parallel_derivatives_and_forward() {
    let layer = parallel();
    assert_eq!((layer.in_dim(), layer.out_dim()), (6, 3 + 2 + 1));
    check_layer(&layer, 4, 3100);
    let theta = uniform_vec(&mut rng(11), layer.num_params(), -1.0, 1.0);
    let x = random_batch(&mut rng(12), 6, 3);
    let y = layer.forward(&theta, &x).0;
    let (mut at, mut row, mut inp) = (0, 0, 0);
    for (d, l) in &layer.parts {
        let yl = l
            .forward(&theta[at..at + l.num_params()], &x.rows(inp, *d))
            .0;
        assert_eq!(y.rows(row, l.out_dim()), yl);
        at += l.num_params();
        row += l.out_dim();
        inp += d;
    }
    let names: Vec<_> = layer.param_specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "parts.0.0.weight",
            "parts.0.0.bias",
            "parts.1.weight",
            "parts.1.bias"
        ]
    );
}

#[test]
fn shared_pair_derivatives() {
    for (i, combine) in [PairCombine::AbsDiff, PairCombine::Concat]
        .into_iter()
        .enumerate()
    {
        for (j, act) in [leaky(), Activation::Prelu { init: 0.25 }]
            .into_iter()
            .enumerate()
        {
            let layer = SharedPair::new(tower(3, 4, 2, act.clone()), combine);
            assert_eq!(layer.in_dim(), 6);
            // The tower's parameters appear once.
            assert_eq!(layer.num_params(), 4 * 4 + act.num_params() + 2 * 5);
            check_layer(&layer, 4, 3200 + 10 * i as u64 + j as u64);
        }
    }
}

#[test]
fn shared_pair_with_a_graph_tower_runs_each_half_as_a_graph_signal() {
    // A sample-mixing tower: each half is a signal on the same graph, run separately.
    let g = small_graph();
    for combine in [PairCombine::AbsDiff, PairCombine::Concat] {
        let graph_tower = Serial::new(vec![
            Box::new(ChebConv::new(2, 3, 2, Arc::new(scaled_laplacian(&g, None)))),
            Box::new(ActivationLayer::new(leaky(), 3)),
        ]);
        let layer = SharedPair::new(Box::new(graph_tower), combine);
        assert!(layer.mixes_samples());
        check_layer(&layer, g.n, 3300);
    }
}

#[test]
fn shared_pair_is_the_tower_applied_twice() {
    let (d, e, n) = (3, 2, 5);
    for combine in [PairCombine::AbsDiff, PairCombine::Concat] {
        let layer = SharedPair::new(tower(d, 4, e, leaky()), combine);
        let theta = uniform_vec(&mut rng(13), layer.num_params(), -1.0, 1.0);
        let x = random_batch(&mut rng(14), 2 * d, n);
        let y = layer.forward(&theta, &x).0;
        let fa = layer.tower.forward(&theta, &x.rows(0, d)).0;
        let fb = layer.tower.forward(&theta, &x.rows(d, d)).0;
        for i in 0..n {
            for a in 0..e {
                match combine {
                    PairCombine::AbsDiff => {
                        let v = (fa.col(i)[a] - fb.col(i)[a]).abs();
                        assert!((y.col(i)[a] - v).abs() < 1e-15);
                    }
                    PairCombine::Concat => {
                        assert_eq!(y.col(i)[a], fa.col(i)[a]);
                        assert_eq!(y.col(i)[e + a], fb.col(i)[a]);
                    }
                }
            }
        }
        let names: Vec<_> = layer.param_specs().into_iter().map(|s| s.name).collect();
        assert_eq!(
            names,
            [
                "tower.0.weight",
                "tower.0.bias",
                "tower.2.weight",
                "tower.2.bias"
            ]
        );
    }
}

/// At f(a) = f(b) (equal halves) the ordinary pair follows `torch.abs`: |·|' = sign(0) = 0, so
/// no cotangent reaches the inputs. Under the flow solver's control the |·| layer's frozen piece
/// decides instead: slope +1 on the right piece, −1 on the left, x̄_a = −x̄_b ≠ 0.
#[test]
fn shared_pair_abs_is_torch_abs_at_zero_unless_controlled() {
    let (d, n) = (3, 2);
    let s = SharedPair::new(tower(d, 4, 2, leaky()), PairCombine::AbsDiff);
    let theta = uniform_vec(&mut rng(31), s.num_params(), -1.0, 1.0);
    let mut x = random_batch(&mut rng(32), 2 * d, n);
    let a0 = x.col(0)[..d].to_vec();
    x.col_mut(0)[d..].copy_from_slice(&a0);
    let (y, tape) = s.forward(&theta, &x);
    assert_eq!(y.col(0), [0.0, 0.0]);
    let y_bar = Batch::from_vec(2, n, vec![1.0; 2 * n]);
    let mut tb = vec![0.0; s.num_params()];
    let x_bar = s.vjp(&theta, &x, &tape, &y_bar, &mut tb);
    assert!(x_bar.col(0).iter().all(|&v| v == 0.0), "{:?}", x_bar.col(0));
    assert!(x_bar.col(1).iter().any(|&v| v != 0.0));

    let Structure::Elementwise(abs) = s.children()[1].structure() else {
        panic!("the |·| child is an activation layer");
    };
    let mut by_piece = Vec::new();
    for piece in [0u16, 1] {
        *abs.control.lock() = Some(ControlState {
            pieces: vec![piece; 2 * n],
            samples: n,
            ..Default::default()
        });
        let (yc, tape) = s.forward(&theta, &x);
        assert_eq!(yc.col(0), [0.0, 0.0]);
        let mut tb = vec![0.0; s.num_params()];
        let xc = s.vjp(&theta, &x, &tape, &y_bar, &mut tb);
        *abs.control.lock() = None;
        let (xa, xb) = (&xc.col(0)[..d], &xc.col(0)[d..]);
        assert!(xa.iter().any(|&v| v != 0.0));
        assert!(xa.iter().zip(xb).all(|(p, q)| *p == -*q));
        by_piece.push(xa.to_vec());
    }
    assert!(by_piece[0].iter().zip(&by_piece[1]).all(|(p, q)| *p == -*q));
}

#[test]
fn combinators_forward_kink_diagnostics_and_non_finite_location() {
    let (d, n) = (3, 4);
    // Pre-activations seen: FanOutConcat's Prelu branch (4 units) and leaky branch (3 units).
    let f = fan_out(d, true);
    let theta = uniform_vec(&mut rng(15), f.num_params(), -1.0, 1.0);
    let x = random_batch(&mut rng(16), d, n);
    let (_, tape) = f.forward(&theta, &x);
    let mut seen = 0;
    f.visit_pre_activations(&x, &tape, &mut |pa| seen += pa.z.as_slice().len());
    assert_eq!(seen, (4 + 3) * n);
    // Parallel: the 3-unit activation inside part 0 and the 1-unit activation of part 2.
    let p = parallel();
    let theta = uniform_vec(&mut rng(17), p.num_params(), -1.0, 1.0);
    let x = random_batch(&mut rng(18), 6, n);
    let (_, tape) = p.forward(&theta, &x);
    let mut seen = 0;
    p.visit_pre_activations(&x, &tape, &mut |pa| seen += pa.z.as_slice().len());
    assert_eq!(seen, (3 + 1) * n);
    // SharedPair(AbsDiff): the tower's 4 hidden units on both halves, plus the |·| of 2 outputs.
    let s = SharedPair::new(tower(d, 4, 2, leaky()), PairCombine::AbsDiff);
    let theta = uniform_vec(&mut rng(19), s.num_params(), -1.0, 1.0);
    let x = random_batch(&mut rng(20), 2 * d, n);
    let (y, tape) = s.forward(&theta, &x);
    let mut seen = Vec::new();
    s.visit_pre_activations(&x, &tape, &mut |pa| {
        seen.push((pa.z.as_slice().len(), pa.activation.kinks()))
    });
    assert_eq!(seen, [(4 * 2 * n, vec![0.0]), (2 * n, vec![0.0])]);
    // Children: the tower, then the |·| as an element-wise activation layer (knot 0, slopes
    // −1/+1) that the flow solver controls like any other; Concat has only the tower.
    let kids = s.children();
    assert_eq!(kids.len(), 2);
    match kids[1].structure() {
        Structure::Elementwise(a) => {
            assert_eq!((a.dim, a.activation.kinks()), (2, vec![0.0]));
            let slopes = [0, 1].map(|k| a.activation.piece_derivative(k, 0.0, 0.0));
            assert_eq!(slopes, [-1.0, 1.0]);
        }
        other => panic!("the |·| child is {other:?}"),
    }
    let c = SharedPair::new(tower(d, 4, 2, leaky()), PairCombine::Concat);
    assert_eq!(c.children().len(), 1);
    assert!(y.all_finite());

    // A NaN in the b half of one sample is found inside the shared tower, named like its tensors.
    let net = Serial::new(vec![
        Box::new(SharedPair::new(
            tower(d, 4, 2, leaky()),
            PairCombine::AbsDiff,
        )),
        Box::new(Dense::new(2, 1)),
    ]);
    let theta = uniform_vec(&mut rng(21), net.num_params(), -1.0, 1.0);
    let mut x = random_batch(&mut rng(22), 2 * d, n);
    assert_eq!(net.locate_non_finite(&theta, &x, ""), None);
    x.col_mut(2)[d + 1] = f64::NAN;
    let found = net.locate_non_finite(&theta, &x, "").unwrap();
    assert!(found.contains("`0.tower.0`"), "{found}");
    let found = f
        .locate_non_finite(
            &uniform_vec(&mut rng(23), f.num_params(), -1.0, 1.0),
            &Batch::from_vec(d, 1, vec![f64::NAN; d]),
            "",
        )
        .unwrap();
    assert!(found.contains("`branches.0`"), "{found}");
    let mut x = random_batch(&mut rng(24), 6, 2);
    x.col_mut(1)[3] = f64::INFINITY;
    let found = p
        .locate_non_finite(
            &uniform_vec(&mut rng(25), p.num_params(), -1.0, 1.0),
            &x,
            "net",
        )
        .unwrap();
    assert!(found.contains("`net.parts.1`"), "{found}");
}

// ---------------------------------------------------------------------------------------------
// NTK.

fn mat_max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut m: f64 = 0.0;
    for c in 0..a.ncols() {
        for r in 0..a.nrows() {
            m = m.max((a[(r, c)] - b[(r, c)]).abs());
        }
    }
    m
}

/// Checks `ntk::gram` against J Jᵀ from the explicit (per-output vjp) and finite-difference
/// Jacobians, at PyTorch-initialised θ on inputs kept away from every kink.
fn check_gram(name: &str, model: &Model, n: usize, route: ntk::GramRoute, seed: u64) {
    assert_eq!(ntk::gram_route(model), route, "{name}: route");
    let (theta, x) = (0..200)
        .map(|a| {
            let theta = init_params(&model.param_specs(), &InitScheme::Torch, seed + a);
            let x = random_batch(&mut rng(seed + 1000 + a), model.in_dim(), n);
            (theta, x)
        })
        .find(|(theta, x)| min_kink_distance(model.net.as_ref(), theta, x) > 1e-3)
        .expect("a point away from the kinks");
    let (h, got_route) = ntk::gram(model, &theta, &x);
    assert_eq!(got_route, route);
    let j = ntk::jacobian(model, &theta, &x);
    let h_vjp = &j * j.transpose();
    let jf = jacobian_fd(model, &theta, &x);
    let h_fd = &jf * jf.transpose();
    let scale = mat_max_abs_diff(&h_vjp, &Mat::zeros(h.nrows(), h.ncols()));
    assert!(scale > 0.0);
    let e_vjp = mat_max_abs_diff(&h, &h_vjp);
    let e_fd = mat_max_abs_diff(&h, &h_fd);
    assert!(
        e_vjp <= 1e-12 * scale,
        "{name}: gram vs vjp Jacobian, {e_vjp:e} of {scale:e}"
    );
    assert!(
        e_fd <= 1e-6 * scale,
        "{name}: gram vs finite differences, {e_fd:e} of {scale:e}"
    );
    assert_eq!(
        mat_max_abs_diff(&h, &h.transpose().to_owned()),
        0.0,
        "{name}: symmetric"
    );
}

#[test]
fn ntk_of_combinator_networks_is_j_jt() {
    let act = leaky();
    let d = 3;
    let siamese = |combine, act: Activation| {
        let pair = SharedPair::new(dense_act(d, act), combine);
        let width = pair.out_dim();
        Model::new(
            Box::new(Serial::new(vec![
                Box::new(pair),
                Box::new(Dense::new(width, 2)),
            ])),
            None,
            leaky(),
        )
    };
    let unet_like = Model::new(
        Box::new(Serial::new(vec![
            Box::new(fan_out(4, true)),
            Box::new(ActivationLayer::new(act.clone(), 2 + 5 + 4)),
            Box::new(Dense::new(11, 2)),
        ])),
        None,
        act.clone(),
    );
    let split = Model::new(
        Box::new(Serial::new(vec![
            Box::new(parallel()),
            Box::new(Dense::new(6, 2)),
        ])),
        None,
        act.clone(),
    );
    // Shared weights nested inside a fan-out: the shared tower beside a plain dense branch.
    let nested = Model::new(
        Box::new(Serial::new(vec![
            Box::new(FanOutConcat::new(vec![
                Box::new(SharedPair::new(
                    tower(d, 3, 2, act.clone()),
                    PairCombine::AbsDiff,
                )),
                Box::new(Dense::new(2 * d, 2)),
            ])),
            Box::new(Dense::new(4, 3)),
        ])),
        None,
        act.clone(),
    );
    let cases = [
        (
            "siamese |f(a) − f(b)|",
            siamese(PairCombine::AbsDiff, act.clone()),
        ),
        (
            "siamese [f(a); f(b)]",
            siamese(PairCombine::Concat, act.clone()),
        ),
        (
            "siamese prelu",
            siamese(PairCombine::AbsDiff, Activation::Prelu { init: 0.25 }),
        ),
        ("fan-out concat", unet_like),
        ("parallel", split),
        ("fan-out of a shared pair", nested),
    ];
    for (i, (name, model)) in cases.iter().enumerate() {
        check_gram(name, model, 5, ntk::GramRoute::Structured, 100 * i as u64);
    }
}

#[test]
fn ntk_of_graph_networks_is_j_jt() {
    let act = leaky();
    let g = knn_graph(6, 31);
    let lt = Arc::new(scaled_laplacian(&g, None));
    let cheb = Model::new(
        Box::new(Serial::new(vec![
            Box::new(ChebConv::new(3, 4, 3, lt.clone())),
            Box::new(ActivationLayer::new(act.clone(), 4)),
            Box::new(ChebConv::new(4, 2, 2, lt)),
        ])),
        None,
        act.clone(),
    );
    let graphconv = Model::new(
        Box::new(Serial::new(vec![
            Box::new(GraphConv::new(3, 4, Arc::new(g.adjacency()))),
            Box::new(ActivationLayer::new(act.clone(), 4)),
            Box::new(Dense::new(4, 2)),
        ])),
        None,
        act,
    );
    check_gram("chebconv", &cheb, g.n, ntk::GramRoute::StructuredGraph, 7);
    check_gram(
        "graphconv",
        &graphconv,
        g.n,
        ntk::GramRoute::StructuredGraph,
        8,
    );
}
