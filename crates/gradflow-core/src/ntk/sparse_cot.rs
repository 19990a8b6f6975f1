//! Sparse cotangent batches for the structured graph NTK route ([`super::graph_gram`]).
//!
//! The reverse pass of the NTK carries one cotangent per output column c = (i, a) (sample i,
//! output a). In a network that mixes samples, column c's cotangent at a layer is a
//! (width × n) matrix whose non-zero columns (nodes) lie in a support S_i: {i} at the output,
//! widened by every propagation going backwards (x̄_j = Σ_k P_kj ȳ_k reaches the nodes j with
//! P_kj ≠ 0 for some k ∈ S_i). The support depends only on the sample i, never on the output
//! a, so the m columns of one sample share one node list ([`Supports`]).
//!
//! [`SparseCot`] stores the non-zero node columns of all nm cotangents as one dense
//! (width × E) block, E = m·Σ_i |S_i|: sample i's block starts at column m·Σ_{i'<i} |S_i'|,
//! and inside it column a·|S_i| + t is output a at node S_i[t]. Dense maps of the features
//! (Wᵀ ȳ) are then one GEMM on the block, propagations are sparse loops per sample (parallel
//! over samples), and element-wise layers scale each column by their Jacobian at its node.

use crate::batch::{par, Batch};
use crate::graph::SparseMatrix;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatRef};
use rayon::prelude::*;
use std::sync::Arc;

/// Sorted node lists S_i, one per sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Supports {
    offsets: Vec<usize>,
    nodes: Vec<usize>,
}

impl Supports {
    /// S_i = {i} for i < n: the supports at the network's output.
    pub fn singletons(n: usize) -> Self {
        Self {
            offsets: (0..=n).collect(),
            nodes: (0..n).collect(),
        }
    }
    fn from_lists(lists: Vec<Vec<usize>>) -> Self {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        offsets.push(0);
        let mut nodes = Vec::with_capacity(lists.iter().map(Vec::len).sum());
        for l in lists {
            nodes.extend_from_slice(&l);
            offsets.push(nodes.len());
        }
        Self { offsets, nodes }
    }
    /// Number of samples.
    pub fn n(&self) -> usize {
        self.offsets.len() - 1
    }
    /// S_i.
    pub fn nodes(&self, i: usize) -> &[usize] {
        &self.nodes[self.offsets[i]..self.offsets[i + 1]]
    }
    /// Σ_i |S_i|.
    pub fn total(&self) -> usize {
        self.nodes.len()
    }
    /// Index of S_i's first node in the concatenation of all supports.
    pub fn offset(&self, i: usize) -> usize {
        self.offsets[i]
    }
    /// True when every support is one node.
    pub fn all_single(&self) -> bool {
        self.nodes.len() == self.n()
    }
    /// S_i ∪ {j : P_kj ≠ 0 for some k ∈ S_i}: where the adjoint of a propagation by P takes a
    /// cotangent supported on S_i.
    pub fn expand(&self, p: &SparseMatrix) -> Self {
        let lists = (0..self.n())
            .into_par_iter()
            .map(|i| {
                let mut l: Vec<usize> = self.nodes(i).to_vec();
                for &k in self.nodes(i) {
                    l.extend(p.row(k).map(|(j, _)| j));
                }
                l.sort_unstable();
                l.dedup();
                l
            })
            .collect();
        Self::from_lists(lists)
    }
    /// S_i ∪ S'_i.
    pub fn union(&self, other: &Supports) -> Self {
        let lists = (0..self.n())
            .into_par_iter()
            .map(|i| {
                let mut l: Vec<usize> = self.nodes(i).to_vec();
                l.extend_from_slice(other.nodes(i));
                l.sort_unstable();
                l.dedup();
                l
            })
            .collect();
        Self::from_lists(lists)
    }
}

/// nm cotangents with per-sample supports (see the module documentation).
#[derive(Clone, Debug)]
pub struct SparseCot {
    pub width: usize,
    pub m: usize,
    pub sup: Arc<Supports>,
    /// width × E, column-major.
    pub data: Vec<f64>,
}

/// Splits `data` into consecutive mutable pieces of the given lengths.
fn split_lengths(mut data: &mut [f64], lens: impl Iterator<Item = usize>) -> Vec<&mut [f64]> {
    let mut out = Vec::new();
    for l in lens {
        let (a, b) = std::mem::take(&mut data).split_at_mut(l);
        out.push(a);
        data = b;
    }
    out
}

impl SparseCot {
    /// The output cotangents: column i·m + a is e_a at node i.
    pub fn outputs(n: usize, m: usize) -> Self {
        let mut data = vec![0.0; m * m * n];
        for i in 0..n {
            for a in 0..m {
                data[(i * m + a) * m + a] = 1.0;
            }
        }
        Self {
            width: m,
            m,
            sup: Arc::new(Supports::singletons(n)),
            data,
        }
    }
    /// All-zero cotangents of the given width on supports `sup`.
    pub fn zeros(width: usize, m: usize, sup: Arc<Supports>) -> Self {
        let data = vec![0.0; width * m * sup.total()];
        Self {
            width,
            m,
            sup,
            data,
        }
    }
    /// Rows [r0, r0 + b) of every stored column.
    pub fn rows(&self, r0: usize, b: usize) -> Self {
        let mut data = Vec::with_capacity(b * self.ncols());
        for col in self.data.chunks(self.width) {
            data.extend_from_slice(&col[r0..r0 + b]);
        }
        Self {
            width: b,
            m: self.m,
            sup: self.sup.clone(),
            data,
        }
    }
    /// E, the number of stored node columns.
    pub fn ncols(&self) -> usize {
        self.m * self.sup.total()
    }
    pub fn bytes(&self) -> u64 {
        (self.data.len() * 8) as u64
    }
    /// The (width × E) block.
    pub fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.width, self.ncols())
    }
    /// First stored column of sample i.
    pub fn first_col(&self, i: usize) -> usize {
        self.m * self.sup.offset(i)
    }
    /// Node of every stored column.
    pub fn nodes_of_columns(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.ncols());
        for i in 0..self.sup.n() {
            for _ in 0..self.m {
                out.extend_from_slice(self.sup.nodes(i));
            }
        }
        out
    }
    /// Output column c = i·m + a of every stored column.
    pub fn output_of_columns(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.ncols());
        for i in 0..self.sup.n() {
            let s = self.sup.nodes(i).len();
            for a in 0..self.m {
                out.extend(std::iter::repeat_n(i * self.m + a, s));
            }
        }
        out
    }
    fn sample_lens(&self, width: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.sup.n()).map(move |i| width * self.m * self.sup.nodes(i).len())
    }

    /// The same supports with every column mapped by `w` (new width × width): w ȳ.
    pub fn map_rows(&self, w: MatRef<'_, f64>) -> Self {
        let e = self.ncols();
        let mut data = vec![0.0; w.nrows() * e];
        let dst = faer::MatMut::from_column_major_slice_mut(&mut data, w.nrows(), e);
        matmul(dst, Accum::Replace, w, self.mat(), 1.0, par());
        Self {
            width: w.nrows(),
            m: self.m,
            sup: self.sup.clone(),
            data,
        }
    }

    /// Σ_k coef_k · (P_k-adjoint of part_k) on `target`: part k is carried across a propagation by
    /// P_k (column j gains Σ_i P_ij ȳ_i) or, for None, copied, then scaled by coef_k and added.
    /// Errors when some result falls outside `target` (an internal inconsistency).
    pub fn combine(
        target: &Arc<Supports>,
        parts: &[(f64, Option<&SparseMatrix>, &SparseCot)],
    ) -> Result<Self, String> {
        let first = parts.first().ok_or("combine: no parts")?.2;
        let (width, m) = (first.width, first.m);
        if parts.iter().any(|p| p.2.width != width || p.2.m != m) {
            return Err("combine: parts of different shapes".into());
        }
        let mut out = Self {
            width,
            m,
            sup: target.clone(),
            data: vec![0.0; width * m * target.total()],
        };
        let lens: Vec<usize> = out.sample_lens(width).collect();
        let chunks = split_lengths(&mut out.data, lens.into_iter());
        chunks
            .into_par_iter()
            .enumerate()
            .try_for_each(|(i, dst)| {
                let tn = target.nodes(i);
                let st = tn.len();
                let pos = |j: usize| {
                    tn.binary_search(&j)
                        .map_err(|_| format!("node {j} outside the target support of {i}"))
                };
                for &(coef, p, part) in parts {
                    let src_nodes = part.sup.nodes(i);
                    let ss = src_nodes.len();
                    // (source index, destination index, weight) triples of this sample.
                    let mut moves: Vec<(usize, usize, f64)> = Vec::new();
                    for (t, &k) in src_nodes.iter().enumerate() {
                        match p {
                            Some(p) => {
                                for (j, v) in p.row(k) {
                                    moves.push((t, pos(j)?, coef * v));
                                }
                            }
                            None => moves.push((t, pos(k)?, coef)),
                        }
                    }
                    let src0 = part.first_col(i) * width;
                    let src = &part.data[src0..src0 + width * m * ss];
                    for a in 0..m {
                        for &(t, u, v) in &moves {
                            let s = &src[(a * ss + t) * width..(a * ss + t + 1) * width];
                            let d = &mut dst[(a * st + u) * width..(a * st + u + 1) * width];
                            d.iter_mut().zip(s).for_each(|(d, s)| *d += v * s);
                        }
                    }
                }
                Ok::<(), String>(())
            })?;
        Ok(out)
    }

    /// Every stored column multiplied element-wise by rows [row0, row0 + width) of column `node`
    /// of `d`.
    pub fn scale_by_nodes(&mut self, d: &Batch, row0: usize) {
        let width = self.width;
        let sup = self.sup.clone();
        let lens: Vec<usize> = self.sample_lens(width).collect();
        split_lengths(&mut self.data, lens.into_iter())
            .into_par_iter()
            .enumerate()
            .for_each(|(i, dst)| {
                let nodes = sup.nodes(i);
                for (e, col) in dst.chunks_mut(width).enumerate() {
                    let node = nodes[e % nodes.len()];
                    col.iter_mut()
                        .zip(&d.col(node)[row0..])
                        .for_each(|(a, b)| *a *= b);
                }
            });
    }

    /// Per output column c, Σ over its stored columns of ⟨ȳ, d[:, node]⟩ (length nm).
    pub fn dot_by_nodes(&self, d: &Batch) -> Vec<f64> {
        let width = self.width;
        let m = self.m;
        (0..self.sup.n())
            .into_par_iter()
            .flat_map_iter(|i| {
                let nodes = self.sup.nodes(i);
                let s = nodes.len();
                let base = self.first_col(i);
                (0..m).map(move |a| {
                    let mut acc = 0.0;
                    for (t, &j) in nodes.iter().enumerate() {
                        let e = base + a * s + t;
                        let col = &self.data[e * width..(e + 1) * width];
                        acc += col.iter().zip(d.col(j)).map(|(x, y)| x * y).sum::<f64>();
                    }
                    acc
                })
            })
            .collect()
    }
}

/// An operation on cotangents that acts on nodes feature by feature, so it commutes with
/// taking a block of rows.
#[derive(Clone, Debug)]
pub enum RowOp {
    /// The adjoint of a propagation by P (column j gains Σ_i P_ij ȳ_i), onto these supports.
    Spread(Arc<SparseMatrix>, Arc<Supports>),
    /// Element-wise product with column `node` of a (width × n) batch (a Jacobian diagonal).
    Scale(Arc<Batch>),
}

/// A cotangent batch kept as a stored `base` followed by row-separable operations (propagations
/// and element-wise layers), so that an affine layer can materialise it a block of output rows
/// at a time: the widened cotangents of the first layers never exist whole.
#[derive(Clone, Debug)]
pub struct Lazy {
    pub base: SparseCot,
    pub ops: Vec<RowOp>,
}

impl Lazy {
    pub fn new(base: SparseCot) -> Self {
        Self {
            base,
            ops: Vec::new(),
        }
    }
    pub fn width(&self) -> usize {
        self.base.width
    }
    /// The supports of the materialised cotangents.
    pub fn supports(&self) -> &Arc<Supports> {
        self.ops
            .iter()
            .rev()
            .find_map(|op| match op {
                RowOp::Spread(_, s) => Some(s),
                RowOp::Scale(_) => None,
            })
            .unwrap_or(&self.base.sup)
    }
    pub fn push(&mut self, op: RowOp) {
        self.ops.push(op);
    }
    /// Rows [r0, r0 + b) of the materialised cotangents.
    pub fn rows(&self, r0: usize, b: usize) -> Result<SparseCot, String> {
        let mut cur = if r0 == 0 && b == self.width() && self.ops.is_empty() {
            self.base.clone()
        } else {
            self.base.rows(r0, b)
        };
        for op in &self.ops {
            match op {
                RowOp::Spread(p, target) => {
                    cur = SparseCot::combine(target, &[(1.0, Some(p), &cur)])?;
                }
                RowOp::Scale(d) => cur.scale_by_nodes(d, r0),
            }
        }
        Ok(cur)
    }
    /// The whole materialised batch.
    pub fn materialize(self) -> Result<SparseCot, String> {
        if self.ops.is_empty() {
            return Ok(self.base);
        }
        self.rows(0, self.width())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The adjoint spreading x̄_j = Σ_i P_ij ȳ_i of sparse cotangents against the dense product
    /// with Pᵀ, for a non-symmetric P, two coefficients and a copied term.
    #[test]
    fn spreading_matches_the_dense_adjoint() {
        let n = 7;
        let (m, width) = (2, 3);
        let mut t = Vec::new();
        for i in 0..n {
            t.push((i, (i * 3 + 1) % n, 0.5 + i as f64));
            t.push((i, (i + 2) % n, -1.25));
            if i % 2 == 0 {
                t.push((i, i, 0.75));
            }
        }
        let p = SparseMatrix::from_triplets(n, t);
        let dense = p.to_dense();
        // Cotangents on two-step supports, with pseudo-random values.
        let sup1 = Arc::new(Supports::singletons(n).expand(&p));
        let mut cot = SparseCot {
            width,
            m,
            sup: sup1.clone(),
            data: vec![0.0; width * m * sup1.total()],
        };
        for (k, v) in cot.data.iter_mut().enumerate() {
            *v = ((k * 37 % 17) as f64) / 8.0 - 1.0;
        }
        let target = Arc::new(sup1.expand(&p));
        let got = SparseCot::combine(&target, &[(2.0, Some(&p), &cot), (-1.0, None, &cot)])
            .expect("target holds the spread");
        // Densify: column c = (i, a) as a width × n matrix.
        let densify = |c: &SparseCot, i: usize, a: usize| {
            let nodes = c.sup.nodes(i);
            let mut d = vec![0.0; width * n];
            for (t, &j) in nodes.iter().enumerate() {
                let e = c.first_col(i) + a * nodes.len() + t;
                d[j * width..(j + 1) * width].copy_from_slice(&c.data[e * width..(e + 1) * width]);
            }
            d
        };
        for i in 0..n {
            for a in 0..m {
                let y = densify(&cot, i, a);
                let mut want = vec![0.0; width * n];
                for j in 0..n {
                    for k in 0..n {
                        for f in 0..width {
                            want[j * width + f] += 2.0 * dense[k * n + j] * y[k * width + f];
                        }
                    }
                    for f in 0..width {
                        want[j * width + f] -= y[j * width + f];
                    }
                }
                let g = densify(&got, i, a);
                for (u, v) in g.iter().zip(&want) {
                    assert!((u - v).abs() <= 1e-14 * 8.0, "{u} vs {v}");
                }
            }
        }
        // A target too small for the spread is an error, not a panic.
        assert!(SparseCot::combine(&sup1, &[(1.0, Some(&p), &cot)]).is_err());
    }
}
