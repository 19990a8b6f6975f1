//! Â in compressed rows, in the engine's float type, and graph propagation over the column
//! parts (its transpose is stored too, so both directions of a GCN epoch are gathers).

use super::kernels::axpy;
use super::Real;
use crate::graph::SparseMatrix;

/// How many neighbours ahead a propagation requests a source column.
const PROPAGATE_AHEAD: usize = 4;

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
    /// another core's cache): each is requested [`PROPAGATE_AHEAD`] neighbours before it is
    /// read.
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
        for (r, col) in dst.chunks_exact_mut(width).enumerate() {
            let i = first + r;
            col.iter_mut().for_each(|v| *v = T::default());
            for e in self.row_start[i]..self.row_start[i + 1] {
                if e + PROPAGATE_AHEAD < self.cols.len() {
                    crate::prefetch::prefetch(column(e + PROPAGATE_AHEAD));
                }
                axpy(col, self.vals[e], column(e));
            }
        }
    }
}
