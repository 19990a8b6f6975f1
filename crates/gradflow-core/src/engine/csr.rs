//! Â in compressed rows, in the engine's float type, and graph propagation over the column
//! parts (its transpose is stored too, so both directions of a GCN epoch are gathers).

use super::kernels::weighted_sum;
use super::Real;
use crate::graph::SparseMatrix;

/// How many neighbours a propagation sums in one pass over a destination column.
const PROPAGATE_GROUP: usize = 16;

/// Â in compressed rows, in the engine's float type.
pub struct Csr<T> {
    row_start: Vec<usize>,
    cols: Vec<usize>,
    vals: Vec<T>,
}

impl<T: Real> Csr<T> {
    /// Â, or Âᵀ with `transpose` (rows of Âᵀ listed in increasing column order of Â, the
    /// summation order of the general path's adjoint).
    pub fn from_sparse(a: &SparseMatrix, transpose: bool) -> Self {
        let n = a.n();
        let mut rows: Vec<Vec<(usize, f64)>> = vec![Vec::new(); n];
        for i in 0..n {
            for (j, v) in a.row(i) {
                if transpose {
                    rows[j].push((i, v));
                } else {
                    rows[i].push((j, v));
                }
            }
        }
        let mut row_start = vec![0];
        let (mut cols, mut vals) = (Vec::new(), Vec::new());
        for r in rows {
            for (j, v) in r {
                cols.push(j);
                vals.push(T::from_f64(v));
            }
            row_start.push(cols.len());
        }
        Self {
            row_start,
            cols,
            vals,
        }
    }

    /// The stored entries (j, A_ij) of row i.
    pub fn row(&self, i: usize) -> impl Iterator<Item = (usize, T)> + '_ {
        let r = self.row_start[i]..self.row_start[i + 1];
        self.cols[r.clone()]
            .iter()
            .copied()
            .zip(self.vals[r].iter().copied())
    }

    /// dst column i − first = Σ_j A_ij src column j for the columns i = first.. that `dst`
    /// holds, columns of `width` features. The source is split into the engine's column parts
    /// of `part_width` columns each: column j is column j mod part_width of
    /// `src[j / part_width]`. The neighbours' columns lie anywhere in the parts (often in
    /// another core's cache): up to [`PROPAGATE_GROUP`] of them are requested, then summed a
    /// block of features at a time in registers ([`weighted_sum`]; per feature in the stored
    /// order, the sums of one neighbour's y += A_ij x_j after another).
    pub fn propagate(
        &self,
        src: &[Vec<T>],
        part_width: usize,
        dst: &mut [T],
        width: usize,
        first: usize,
    ) {
        let column = |e: usize| {
            let j = self.cols[e];
            let o = j % part_width * width;
            &src[j / part_width][o..o + width]
        };
        let mut terms: [(T, &[T]); PROPAGATE_GROUP] = [(T::default(), &[]); PROPAGATE_GROUP];
        for (r, col) in dst.chunks_exact_mut(width).enumerate() {
            let i = first + r;
            let (mut e, end) = (self.row_start[i], self.row_start[i + 1]);
            // One group at least: a row without entries gives a zero column.
            let mut add = false;
            loop {
                let g = (end - e).min(PROPAGATE_GROUP);
                for (t, q) in terms.iter_mut().zip(e..e + g) {
                    let x = column(q);
                    crate::prefetch::prefetch(x);
                    *t = (self.vals[q], x);
                }
                weighted_sum(col, &terms[..g], add);
                (e, add) = (e + g, true);
                if e >= end {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against y += A_ij x_j one neighbour after another, bit for bit (the summation order the
    /// blocked sums keep), and against the dense product: rows with more neighbours than a
    /// group, an empty row, widths with and without a partial block, a source in two parts,
    /// and a destination that starts at a later row.
    #[test]
    fn propagation_sums_neighbours_in_order() {
        let n = 40;
        let mut t = Vec::new();
        for i in 0..n {
            // Row 7 has no entries; row 3 has every column (more than a group).
            let cols: Vec<usize> = match i {
                7 => Vec::new(),
                3 => (0..n).collect(),
                _ => (0..5).map(|q| (i * 7 + q * 11) % n).collect(),
            };
            for j in cols {
                t.push((i, j, 0.1 + ((i * 31 + j * 17) % 23) as f64 / 7.0));
            }
        }
        let a = SparseMatrix::from_triplets(n, t);
        let dense = a.to_dense();
        for width in [1, 5, 16, 37] {
            let x: Vec<f64> = (0..n * width)
                .map(|q| ((q * 7919) % 1000) as f64 / 137.0 - 3.0)
                .collect();
            let part = 25;
            let src = vec![x[..part * width].to_vec(), x[part * width..].to_vec()];
            for transpose in [false, true] {
                let csr = Csr::<f64>::from_sparse(&a, transpose);
                let first = 2;
                let mut dst = vec![f64::NAN; (n - first) * width];
                csr.propagate(&src, part, &mut dst, width, first);
                for i in first..n {
                    let got = &dst[(i - first) * width..(i - first + 1) * width];
                    let mut want = vec![0.0; width];
                    for (j, v) in csr.row(i) {
                        for (w, &xv) in want.iter_mut().zip(&x[j * width..(j + 1) * width]) {
                            *w += v * xv;
                        }
                    }
                    assert_eq!(got, &want[..], "row {i}, width {width}");
                    for (u, &g) in got.iter().enumerate() {
                        let d: f64 = (0..n)
                            .map(|j| {
                                let aij = match transpose {
                                    false => dense[i * n + j],
                                    true => dense[j * n + i],
                                };
                                aij * x[j * width + u]
                            })
                            .sum();
                        assert!((g - d).abs() <= 1e-12 * (1.0 + d.abs()), "dense ({i}, {u})");
                    }
                }
            }
        }
    }
}
