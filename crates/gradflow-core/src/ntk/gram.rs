//! The empirical NTK H = J Jᵀ (nm × nm, index i·m + a) without forming J where a cheaper route
//! exists, plus the products H v = J(Jᵀ v) for matrix-free methods.
//!
//! Routes:
//! - **structured** (networks that do not mix samples: dnn, resnet, …): one reverse pass whose
//!   cotangent batch has N = nm columns, column i·m + a carrying e_a for sample i; every layer adds
//!   its own term through [`Layer::vjp_gram`] — for a dense layer (Ḡᵀ Ḡ) ⊙ (xᵀx + 1) — so the
//!   cost is (nm)² per unit of width instead of (nm)²·p, and the Jacobian never exists.
//! - **structured-graph** (graph networks: gcn, cheb, graphconv): one reverse pass with sparse
//!   per-sample supports, each affine layer adding its term by Hadamard products or by tiles of
//!   per-column weight cotangents ([`super::graph_gram`]); J never exists.
//! - **jacobian** (networks that mix samples in a way the graph walker cannot read, and the
//!   fallback if it fails): J row by row, one vjp per output, then J Jᵀ. Memory nm·p.
//! - **matrix-free**: H v = J (Jᵀ v) by one vjp and one jvp; memory O(nm + p).

use crate::batch::{par, Batch};
use crate::model::Model;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat};
use serde::{Deserialize, Serialize};

/// How a Gram matrix or spectrum was obtained (the routes of the module documentation; [`gram`]
/// takes one of the first three, [`super::ntk_spectrum`] any). Serialised as its [`name`](Self::name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GramRoute {
    Structured,
    StructuredGraph,
    Jacobian,
    MatrixFree,
}

impl GramRoute {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Structured => "structured",
            Self::StructuredGraph => "structured-graph",
            Self::Jacobian => "jacobian",
            Self::MatrixFree => "matrix-free",
        }
    }
}

impl std::fmt::Display for GramRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which route `gram` takes for this model.
pub fn gram_route(model: &Model) -> GramRoute {
    if model.net.mixes_samples() {
        if super::graph_gram::supported(model) {
            GramRoute::StructuredGraph
        } else {
            GramRoute::Jacobian
        }
    } else {
        GramRoute::Structured
    }
}

/// Bytes the Gram matrix needs by the route `gram` takes (the matrix itself plus working memory).
pub fn gram_bytes(model: &Model, n: usize) -> u64 {
    let nm = (n * model.out_dim()) as u64;
    let base = nm * nm * 8;
    match gram_route(model) {
        GramRoute::Structured => {
            let widest = model.p().min(4096) as u64; // activations of N columns, bounded by width
            base + nm * 256 * 8 + 4 * nm * widest * 8
        }
        GramRoute::StructuredGraph => super::graph_gram::graph_gram_bytes(model, n)
            .unwrap_or(base + nm * model.p() as u64 * 8),
        // (`gram_route` never answers MatrixFree.)
        GramRoute::Jacobian | GramRoute::MatrixFree => base + nm * model.p() as u64 * 8,
    }
}

/// H = J Jᵀ at θ on inputs x, by the cheapest exact route (the structured graph route falls
/// back to the Jacobian when its walker fails on this θ, x; the route returned is the one taken).
///
/// ```
/// use gradflow_core::activation::Activation;
/// use gradflow_core::data::Dataset;
/// use gradflow_core::init::{init_params, InitScheme};
/// use gradflow_core::ntk::{gram, jacobian, GramRoute};
/// use gradflow_core::presets::dnn;
///
/// let data = Dataset::ball(6, 3, 2, 1);
/// let model = dnn(3, &[8], 2, &Activation::LeakyRelu { slope: 0.1 });
/// let theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
/// let (h, route) = gram(&model, &theta, &data.x);
/// assert_eq!(route, GramRoute::Structured); // never forms J
/// // The same kernel from the explicit Jacobian: H = J Jᵀ, entry (i·m + a, j·m + b).
/// let j = jacobian(&model, &theta, &data.x);
/// let jjt = &j * j.transpose();
/// for r in 0..12 {
///     for c in 0..12 {
///         assert!((h[(r, c)] - jjt[(r, c)]).abs() <= 1e-12 * (1.0 + jjt[(r, c)].abs()));
///     }
/// }
/// ```
pub fn gram(model: &Model, theta: &[f64], x: &Batch) -> (Mat<f64>, GramRoute) {
    let route = gram_route(model);
    if route == GramRoute::StructuredGraph {
        if let Ok(h) = super::graph_gram::graph_gram(model, theta, x) {
            return (h, route);
        }
    }
    match route {
        GramRoute::Structured => (gram_structured(model, theta, x), GramRoute::Structured),
        // (`gram_route` never answers MatrixFree.)
        GramRoute::StructuredGraph | GramRoute::Jacobian | GramRoute::MatrixFree => {
            let j = jacobian(model, theta, x);
            let mut h = Mat::<f64>::zeros(j.nrows(), j.nrows());
            matmul(
                h.as_mut(),
                Accum::Replace,
                j.as_ref(),
                j.transpose(),
                1.0,
                par(),
            );
            (h, GramRoute::Jacobian)
        }
    }
}

/// The structured route; panics if the network mixes samples (use [`gram`]).
pub fn gram_structured(model: &Model, theta: &[f64], x: &Batch) -> Mat<f64> {
    assert!(
        !model.net.mixes_samples(),
        "gram_structured: the network mixes samples"
    );
    let (n, m) = (x.n(), model.out_dim());
    let ev = model.evaluate(theta, x);
    let mut y_bar = Batch::zeros(m, n * m);
    for i in 0..n {
        for a in 0..m {
            y_bar.col_mut(i * m + a)[a] = 1.0;
        }
    }
    let mut h = zeros_parallel(n * m);
    model.vjp_gram(theta, x, &ev, &y_bar, m, &mut h);
    mirror_lower(&mut h);
    h
}

/// An n × n zero matrix written by all threads (faer's `Mat::zeros` fills it from one thread;
/// at nm = 10⁴ that is 800 MB of first-touch page faults).
pub fn zeros_parallel(n: usize) -> Mat<f64> {
    use rayon::prelude::*;
    let mut h = Mat::<f64>::with_capacity(n, n);
    // SAFETY: f64 has no invalid bit patterns and every entry is written below before any read.
    unsafe { h.set_dims(n, n) };
    h.as_mut()
        .par_col_chunks_mut(64)
        .for_each(|mut c| c.fill(0.0));
    h
}

/// The explicit Jacobian J = ∂u/∂θ (nm × p, row i·m + a), one vjp per output: the reference
/// route, and the one for networks that mix samples. For networks that do not mix samples, row
/// block i depends on sample i alone, so each sample gets its own one-column forward pass and m
/// vjps (n·m one-sample passes instead of n·m whole-batch ones), the samples split among the
/// threads.
pub fn jacobian(model: &Model, theta: &[f64], x: &Batch) -> Mat<f64> {
    let (n, m, p) = (x.n(), model.out_dim(), model.p());
    let mut j = Mat::<f64>::zeros(n * m, p);
    if model.net.mixes_samples() {
        let ev = model.evaluate(theta, x);
        let mut w = Batch::zeros(m, n);
        let mut row = vec![0.0; p];
        for i in 0..n {
            for a in 0..m {
                w.col_mut(i)[a] = 1.0;
                row.iter_mut().for_each(|v| *v = 0.0);
                model.vjp(theta, x, &ev, &w, &mut row);
                w.col_mut(i)[a] = 0.0;
                for (k, &v) in row.iter().enumerate() {
                    j[(i * m + a, k)] = v;
                }
            }
        }
        return j;
    }
    use rayon::prelude::*;
    let rows: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .flat_map_iter(|i| {
            let xi = Batch::from_vec(x.features(), 1, x.col(i).to_vec());
            let ev = model.evaluate(theta, &xi);
            (0..m)
                .map(move |a| {
                    let mut w = Batch::zeros(m, 1);
                    w.col_mut(0)[a] = 1.0;
                    let mut row = vec![0.0; p];
                    model.vjp(theta, &xi, &ev, &w, &mut row);
                    row
                })
                .collect::<Vec<_>>()
        })
        .collect();
    for (r, row) in rows.iter().enumerate() {
        for (k, &v) in row.iter().enumerate() {
            j[(r, k)] = v;
        }
    }
    j
}

/// Matrix-free H v = J (Jᵀ v) at a fixed θ (one vjp and one jvp per product).
pub struct NtkOperator<'a> {
    model: &'a Model,
    theta: &'a [f64],
    x: &'a Batch,
    ev: crate::model::Evaluation,
    scratch: Vec<f64>,
}

impl<'a> NtkOperator<'a> {
    pub fn new(model: &'a Model, theta: &'a [f64], x: &'a Batch) -> Self {
        let ev = model.evaluate(theta, x);
        Self {
            model,
            theta,
            x,
            ev,
            scratch: vec![0.0; theta.len()],
        }
    }
    pub fn dim(&self) -> usize {
        self.x.n() * self.model.out_dim()
    }
    /// out = H v (both of length nm, index i·m + a).
    pub fn apply(&mut self, v: &[f64], out: &mut [f64]) {
        let w = Batch::from_vec(self.model.out_dim(), self.x.n(), v.to_vec());
        self.scratch.iter_mut().for_each(|g| *g = 0.0);
        self.model
            .vjp(self.theta, self.x, &self.ev, &w, &mut self.scratch);
        let u = self.model.jvp(self.theta, self.x, &self.ev, &self.scratch);
        out.copy_from_slice(u.as_slice());
    }
}

/// Copies the lower triangle of h onto the upper one (h[j, i] ← h[i, j] for i > j), by 64 × 64
/// tiles, the destination columns split among the threads.
pub fn mirror_lower(h: &mut Mat<f64>) {
    use rayon::prelude::*;
    let n = h.nrows();
    const B: usize = 64;
    let cs = h.col_stride() as usize;
    /// The matrix's base pointer, shared by the threads.
    #[derive(Clone, Copy)]
    struct Base(*mut f64);
    // SAFETY: the threads write disjoint entries (upper triangle, distinct destination columns)
    // and read only the lower triangle, which nobody writes.
    unsafe impl Send for Base {}
    unsafe impl Sync for Base {}
    let base = Base(h.as_ptr_mut());
    (0..n.div_ceil(B)).into_par_iter().for_each(|ib| {
        let p = base;
        let i0 = ib * B;
        for j0 in (0..=i0).step_by(B) {
            for i in i0..(i0 + B).min(n) {
                for j in j0..(j0 + B).min(i) {
                    // SAFETY: i, j < n; (j, i) is in column i, owned by this task (i ∈ [i0, i0+B)),
                    // and (i, j) with i > j is in the lower triangle, only read.
                    unsafe { *p.0.add(j + i * cs) = *p.0.add(i + j * cs) };
                }
            }
        }
    });
}

/// Makes h exactly symmetric: h ← (h + hᵀ)/2.
pub fn symmetrize(h: &mut Mat<f64>) {
    let n = h.nrows();
    for j in 0..n {
        for i in j + 1..n {
            let v = 0.5 * (h[(i, j)] + h[(j, i)]);
            h[(i, j)] = v;
            h[(j, i)] = v;
        }
    }
}
