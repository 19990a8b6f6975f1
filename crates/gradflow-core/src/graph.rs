//! Graphs on the n samples for graph networks: a compressed sparse-row matrix, the k-nearest-
//! neighbour graph of the inputs (symmetrised), and Kipf & Welling's normalised adjacency
//! Â = D̃^{−1/2}(A + I)D̃^{−1/2}, D̃ the degrees of A + I.

use crate::batch::Batch;
use crate::error::{Error, Result};

/// A square sparse matrix in compressed sparse-row form.
#[derive(Clone, Debug, PartialEq)]
pub struct SparseMatrix {
    n: usize,
    row_start: Vec<usize>,
    cols: Vec<usize>,
    vals: Vec<f64>,
}

impl SparseMatrix {
    /// From (row, col, value) triplets; duplicates are summed.
    pub fn from_triplets(n: usize, mut t: Vec<(usize, usize, f64)>) -> Self {
        t.sort_by_key(|&(i, j, _)| (i, j));
        let mut row_start = vec![0; n + 1];
        let mut cols = Vec::with_capacity(t.len());
        let mut vals: Vec<f64> = Vec::with_capacity(t.len());
        let mut last = None;
        for (i, j, v) in t {
            assert!(i < n && j < n, "SparseMatrix: index out of range");
            if last == Some((i, j)) {
                *vals.last_mut().unwrap() += v;
                continue;
            }
            last = Some((i, j));
            cols.push(j);
            vals.push(v);
            row_start[i + 1] += 1;
        }
        for i in 0..n {
            row_start[i + 1] += row_start[i];
        }
        Self {
            n,
            row_start,
            cols,
            vals,
        }
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn nnz(&self) -> usize {
        self.vals.len()
    }
    /// The non-zeros (column, value) of row i.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let r = self.row_start[i]..self.row_start[i + 1];
        self.cols[r.clone()]
            .iter()
            .copied()
            .zip(self.vals[r].iter().copied())
    }
    /// Dense copy, row-major (for tests and small exports).
    pub fn to_dense(&self) -> Vec<f64> {
        let mut d = vec![0.0; self.n * self.n];
        for i in 0..self.n {
            for (j, v) in self.row(i) {
                d[i * self.n + j] = v;
            }
        }
        d
    }
}

/// An undirected simple graph on n nodes: each edge once as (i, j) with i < j.
#[derive(Clone, Debug, PartialEq)]
pub struct Graph {
    pub n: usize,
    pub edges: Vec<(usize, usize)>,
}

impl Graph {
    /// Symmetrises and deduplicates a list of (possibly directed) edges; self-loops are dropped
    /// (the normalisation adds them back as A + I).
    pub fn from_edges(n: usize, edges: impl IntoIterator<Item = (usize, usize)>) -> Self {
        let mut e: Vec<(usize, usize)> = edges
            .into_iter()
            .filter(|(i, j)| i != j)
            .map(|(i, j)| (i.min(j), i.max(j)))
            .collect();
        e.sort_unstable();
        e.dedup();
        Self { n, edges: e }
    }

    /// The k-nearest-neighbour graph of the samples (Euclidean), symmetrised: i ~ j when j is
    /// among i's k nearest or i among j's. Ties are broken by the smaller index.
    pub fn knn(x: &Batch, k: usize) -> Result<Self> {
        let n = x.n();
        if k == 0 || k >= n {
            return Err(Error::Invalid(format!(
                "graph.k = {k} must satisfy 1 ≤ k < n = {n}: choose a smaller k or more samples"
            )));
        }
        let norms: Vec<f64> = (0..n)
            .map(|i| x.col(i).iter().map(|v| v * v).sum())
            .collect();
        let mut edges = Vec::with_capacity(n * k);
        let mut dist: Vec<(f64, usize)> = Vec::with_capacity(n);
        for i in 0..n {
            dist.clear();
            let xi = x.col(i);
            for j in (0..n).filter(|&j| j != i) {
                let dot: f64 = xi.iter().zip(x.col(j)).map(|(a, b)| a * b).sum();
                dist.push((norms[i] + norms[j] - 2.0 * dot, j));
            }
            dist.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            edges.extend(dist[..k].iter().map(|&(_, j)| (i, j)));
        }
        Ok(Self::from_edges(n, edges))
    }

    /// Â = D̃^{−1/2}(A + I)D̃^{−1/2}.
    pub fn normalized_adjacency(&self) -> SparseMatrix {
        let mut deg = vec![1.0; self.n];
        for &(i, j) in &self.edges {
            deg[i] += 1.0;
            deg[j] += 1.0;
        }
        let s: Vec<f64> = deg.iter().map(|d| 1.0 / f64::sqrt(*d)).collect();
        let mut t: Vec<(usize, usize, f64)> = (0..self.n).map(|i| (i, i, s[i] * s[i])).collect();
        for &(i, j) in &self.edges {
            t.push((i, j, s[i] * s[j]));
            t.push((j, i, s[i] * s[j]));
        }
        SparseMatrix::from_triplets(self.n, t)
    }
}

/// Eigenvalues of a symmetric sparse matrix by the dense solver (for Â of up to a few thousand
/// nodes), ascending.
pub fn symmetric_eigenvalues(a: &SparseMatrix) -> Vec<f64> {
    let n = a.n();
    let mut dense = faer::Mat::<f64>::zeros(n, n);
    for i in 0..n {
        for (j, v) in a.row(i) {
            dense[(i, j)] = v;
        }
    }
    dense
        .self_adjoint_eigenvalues(faer::Side::Lower)
        .expect("symmetric eigenvalues of Â")
}

/// The smallest |eigenvalue| of Â: a GCN's outputs pass through Â last, so every zero (or tiny)
/// eigenvalue of Â with an eigenvector orthogonal to 1 forces m zero (tiny) eigenvalues of the
/// NTK, whatever p is.
pub fn min_abs_eigenvalue(a: &SparseMatrix) -> f64 {
    symmetric_eigenvalues(a)
        .iter()
        .map(|v| v.abs())
        .fold(f64::INFINITY, f64::min)
}

// Operators for the spectral and spatial graph layers (ChebConv, GraphConv).

impl Graph {
    /// The plain adjacency A: a one at (i, j) and (j, i) for every edge, no self-loops, no
    /// normalisation (GraphConv's neighbour sum, Morris et al. 2019).
    pub fn adjacency(&self) -> SparseMatrix {
        let mut t = Vec::with_capacity(2 * self.edges.len());
        for &(i, j) in &self.edges {
            t.push((i, j, 1.0));
            t.push((j, i, 1.0));
        }
        SparseMatrix::from_triplets(self.n, t)
    }
}

/// ChebConv's rescaled Laplacian L̃ = 2L/λ_max − I with L = I − D^{−1/2} A D^{−1/2} the
/// symmetric normalised Laplacian of the plain adjacency A (an isolated node gets D^{−1/2} = 0,
/// so L_ii = 1, as in PyTorch Geometric). `lambda_max` defaults to 2, PyG's ChebConv default for
/// this normalisation, which makes L̃ = −D^{−1/2} A D^{−1/2}. Zero diagonal entries are not stored.
///
/// Panics unless λ_max is finite and positive.
pub fn scaled_laplacian(g: &Graph, lambda_max: Option<f64>) -> SparseMatrix {
    let lambda = lambda_max.unwrap_or(2.0);
    assert!(
        lambda.is_finite() && lambda > 0.0,
        "scaled_laplacian: λ_max = {lambda} must be finite and positive"
    );
    let mut deg = vec![0.0; g.n];
    for &(i, j) in &g.edges {
        deg[i] += 1.0;
        deg[j] += 1.0;
    }
    let s: Vec<f64> = deg
        .iter()
        .map(|&d| if d > 0.0 { 1.0 / f64::sqrt(d) } else { 0.0 })
        .collect();
    let scale = 2.0 / lambda;
    let diag = scale - 1.0;
    let mut t: Vec<(usize, usize, f64)> = Vec::with_capacity(g.n + 2 * g.edges.len());
    if diag != 0.0 {
        t.extend((0..g.n).map(|i| (i, i, diag)));
    }
    for &(i, j) in &g.edges {
        let v = -scale * s[i] * s[j];
        t.push((i, j, v));
        t.push((j, i, v));
    }
    SparseMatrix::from_triplets(g.n, t)
}

/// Propagation of a batch across its columns (nodes): column i of the result is Σ_j A_ij x_j,
/// i.e. X Aᵀ in the (features × nodes) layout; with `transpose`, Σ_j A_ji x_j (X A), the adjoint.
///
/// Panics unless the batch has one column per node of A.
pub fn propagate_columns(a: &SparseMatrix, x: &Batch, transpose: bool) -> Batch {
    assert_eq!(
        x.n(),
        a.n(),
        "graph propagation: batch size must equal the number of graph nodes"
    );
    let mut y = Batch::zeros(x.features(), x.n());
    for i in 0..a.n() {
        for (j, v) in a.row(i) {
            let (dst, src) = if transpose { (j, i) } else { (i, j) };
            for (o, s) in y.col_mut(dst).iter_mut().zip(x.col(src)) {
                *o += v * s;
            }
        }
    }
    y
}
