//! The per-layer terms of the structured graph NTK route ([`super::graph_gram`]): the
//! parameter Gram of an affine layer from its stacked features and sparse output cotangents
//! (Hadamard route for single-node supports, tiles of per-column weight cotangents otherwise),
//! that of a leaf with a few parameters (PᵀP), the adjoint of the Chebyshev recurrence on
//! sparse cotangents, and the forward basis terms Z_k of an affine graph layer. The maths is in `graph_gram`'s module documentation.

use super::sparse_cot::{Lazy, SparseCot};
use crate::batch::{par, Batch};
use crate::graph::{propagate_columns, SparseMatrix};
use crate::layers::GraphBasis;
use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::{Accum, Mat, MatMut, MatRef};
use rayon::prelude::*;
use std::sync::Arc;

/// Largest tile T of the tile route, in bytes.
pub const TILE_BYTES: usize = 128 << 20;
/// Smallest tile budget (a tile still holds at least one output row).
const MIN_TILE_BYTES: usize = 16 << 20;

/// The tile budget for an nm × nm kernel: half the bytes of H, within [16 MB, [`TILE_BYTES`]], so
/// that small kernels do not pay for a large tile while the GEMM's inner dimension stays long.
pub fn tile_bytes_for(nm: usize) -> usize {
    (nm * nm * 4).clamp(MIN_TILE_BYTES, TILE_BYTES)
}
/// Row block of the Hadamard route.
pub(crate) const HADAMARD_ROWS: usize = 256;

/// An affine layer's term: adds ⟨θ̄_c, θ̄_c'⟩ (features `f`, in′ × n; output cotangents `cot`)
/// to the lower triangle of h, and when `ws` is not empty returns the basis cotangents
/// Z̄_k = W_kᵀ Ȳ for the weights W_k (out × in) in `ws`, on the output supports. The tile route
/// materialises `cot` one block of output rows at a time and accumulates Z̄_k block by block.
pub(crate) fn affine_term(
    f: &Mat<f64>,
    cot: &Lazy,
    ws: &[MatRef<'_, f64>],
    tile_bytes: usize,
    h: &mut Mat<f64>,
) -> Result<Vec<SparseCot>, String> {
    let sup = cot.supports().clone();
    let m = cot.base.m;
    let big_n = m * sup.n();
    let (inp, w) = (f.nrows(), cot.width());
    if sup.all_single() {
        let full = cot.rows(0, w)?;
        hadamard(f, &full, h);
        return Ok(ws.iter().map(|wk| full.map_rows(wk.transpose())).collect());
    }
    let mut zb: Vec<SparseCot> = ws
        .iter()
        .map(|wk| SparseCot::zeros(wk.ncols(), m, sup.clone()))
        .collect();
    let block = (tile_bytes / (inp * big_n * 8).max(1)).clamp(1, w);
    let mut tile = vec![0.0; block * inp * big_n];
    for o0 in (0..w).step_by(block) {
        let b = block.min(w - o0);
        let rows = cot.rows(o0, b)?;
        let len = b * inp;
        tile[..len * big_n]
            .par_chunks_mut(len * m)
            .enumerate()
            .for_each(|(i, chunk)| {
                let nodes = sup.nodes(i);
                let s = nodes.len();
                let mut fs = Mat::<f64>::zeros(inp, s);
                for (t, &j) in nodes.iter().enumerate() {
                    fs.as_mut().col_mut(t).copy_from(f.col(j));
                }
                for a in 0..m {
                    let e0 = rows.first_col(i) + a * s;
                    let ya =
                        MatRef::from_column_major_slice(&rows.data[e0 * b..(e0 + s) * b], b, s);
                    let dst = MatMut::from_column_major_slice_mut(
                        &mut chunk[a * len..(a + 1) * len],
                        inp,
                        b,
                    );
                    matmul(
                        dst,
                        Accum::Replace,
                        fs.as_ref(),
                        ya.transpose(),
                        1.0,
                        faer::Par::Seq,
                    );
                }
            });
        let t = MatRef::from_column_major_slice(&tile[..len * big_n], len, big_n);
        triangular::matmul(
            h.as_mut(),
            BlockStructure::TriangularLower,
            Accum::Add,
            t.transpose(),
            BlockStructure::Rectangular,
            t,
            BlockStructure::Rectangular,
            1.0,
            par(),
        );
        for (z, wk) in zb.iter_mut().zip(ws) {
            let e = z.ncols();
            let dst = MatMut::from_column_major_slice_mut(&mut z.data, wk.ncols(), e);
            let wt = wk.subrows(o0, b).transpose();
            matmul(dst, Accum::Add, wt, rows.mat(), 1.0, par());
        }
    }
    Ok(zb)
}

/// The Hadamard route (every support one node): stored column c is output column c, at node
/// S_{c/m}; H += (ȲᵀȲ) ⊙ (X̃_gᵀX̃_g) by blocks of rows.
fn hadamard(f: &Mat<f64>, cot: &SparseCot, h: &mut Mat<f64>) {
    let big_n = cot.ncols();
    let inp = f.nrows();
    let nodes = cot.nodes_of_columns();
    let mut xg = Mat::<f64>::zeros(inp, big_n);
    for (c, &j) in nodes.iter().enumerate() {
        xg.as_mut().col_mut(c).copy_from(f.col(j));
    }
    let y = cot.mat();
    for r0 in (0..big_n).step_by(HADAMARD_ROWS) {
        let rb = HADAMARD_ROWS.min(big_n - r0);
        let cols = r0 + rb;
        let mut g = Mat::<f64>::zeros(rb, cols);
        let mut k = Mat::<f64>::zeros(rb, cols);
        let yr = y.subcols(r0, rb).transpose();
        matmul(
            g.as_mut(),
            Accum::Replace,
            yr,
            y.subcols(0, cols),
            1.0,
            par(),
        );
        let xr = xg.as_ref().subcols(r0, rb).transpose();
        let xc = xg.as_ref().subcols(0, cols);
        matmul(k.as_mut(), Accum::Replace, xr, xc, 1.0, par());
        let mut hb = h.as_mut().submatrix_mut(r0, 0, rb, cols);
        for j in 0..cols {
            for i in 0..rb {
                hb[(i, j)] += g[(i, j)] * k[(i, j)];
            }
        }
    }
}

/// Adds PᵀP to h for a leaf with parameters: P[k, c] = Σ over column c's nodes j of
/// ⟨ȳ_{c,j}, ∂y_j/∂θ_k⟩, with `dparams[k]` = ∂y/∂θ_k on the whole batch.
pub(crate) fn leaf_gram(dparams: &[Batch], cot: &SparseCot, h: &mut Mat<f64>) {
    let big_n = cot.m * cot.sup.n();
    let mut p = Mat::<f64>::zeros(dparams.len(), big_n);
    for (k, dk) in dparams.iter().enumerate() {
        for (c, v) in cot.dot_by_nodes(dk).into_iter().enumerate() {
            p[(k, c)] = v;
        }
    }
    matmul(
        h.as_mut(),
        Accum::Add,
        p.transpose(),
        p.as_ref(),
        1.0,
        par(),
    );
}

/// X̄ = Σ_k T_k(L̃)-adjoint of Z̄_k by the Chebyshev recurrence run backwards (as in ChebConv's
/// vjp), each Z̄_k on the smallest support that holds it: level l = S expanded l times by L̃.
pub(crate) fn chebyshev_adjoint(
    l: &SparseMatrix,
    order: usize,
    zb: Vec<SparseCot>,
) -> Result<SparseCot, String> {
    let mut levels = vec![zb[0].sup.clone()];
    for _ in 1..order {
        let next = Arc::new(levels.last().expect("a level").expand(l));
        levels.push(next);
    }
    let mut zb: Vec<(SparseCot, usize)> = zb.into_iter().map(|z| (z, 0)).collect();
    for k in (1..order).rev() {
        let (zk, lk) = zb.pop().expect("one term per order");
        let coef = if k >= 2 { 2.0 } else { 1.0 };
        let (prev, lp) = &zb[k - 1];
        let lt = (lk + 1).max(*lp);
        let sum = SparseCot::combine(&levels[lt], &[(1.0, None, prev), (coef, Some(l), &zk)])?;
        zb[k - 1] = (sum, lt);
        if k >= 2 {
            let (before, lb) = &zb[k - 2];
            let lt = lk.max(*lb);
            let sum = SparseCot::combine(&levels[lt], &[(1.0, None, before), (-1.0, None, &zk)])?;
            zb[k - 2] = (sum, lt);
        }
    }
    Ok(zb.swap_remove(0).0)
}

/// Z_0 … Z_{K−1} of an affine node's basis on input x.
pub(crate) fn basis_terms(basis: &GraphBasis, x: &Batch) -> Result<Vec<Batch>, String> {
    let check = |p: &SparseMatrix| {
        (p.n() == x.n()).then_some(()).ok_or(format!(
            "a graph of {} nodes on a batch of {}",
            p.n(),
            x.n()
        ))
    };
    match basis {
        GraphBasis::Terms(ts) => ts
            .iter()
            .map(|t| match t {
                Some(p) => check(p).map(|_| propagate_columns(p, x, false)),
                None => Ok(x.clone()),
            })
            .collect(),
        GraphBasis::Chebyshev { l_tilde, order } => {
            check(l_tilde)?;
            let mut z = vec![x.clone()];
            for k in 1..*order {
                let mut next = propagate_columns(l_tilde, &z[k - 1], false);
                if k >= 2 {
                    for (v, b) in next.as_mut_slice().iter_mut().zip(z[k - 2].as_slice()) {
                        *v = 2.0 * *v - b;
                    }
                }
                z.push(next);
            }
            Ok(z)
        }
    }
}

fn max_abs(v: &[f64]) -> f64 {
    v.iter().fold(0.0f64, |a, x| a.max(x.abs()))
}

/// Relative agreement of two batches (NaN fails).
pub(crate) fn agree(a: &Batch, b: &Batch) -> bool {
    let scale = max_abs(b.as_slice()).max(1.0);
    let diff = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .fold(0.0f64, |m, (p, q)| m.max((p - q).abs()));
    a.features() == b.features() && a.n() == b.n() && diff <= 1e-12 * scale
}
