//! `Batch`: a contiguous (features × n) column-major block of f64 — one column per sample, so the
//! memory order is sample-major (index i·features + a), the output convention of
//! docs/theory.md, 'Conventions'.
//! It owns a plain `Vec<f64>` (element-wise work is a slice loop) and lends `faer` views for
//! matrix products.

use faer::{MatMut, MatRef};

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    data: Vec<f64>,
    features: usize,
    n: usize,
}

impl Batch {
    pub fn zeros(features: usize, n: usize) -> Self {
        Self {
            data: vec![0.0; features * n],
            features,
            n,
        }
    }

    /// Wraps sample-major data (sample i occupies `data[i*features..(i+1)*features]`).
    pub fn from_vec(features: usize, n: usize, data: Vec<f64>) -> Self {
        assert_eq!(
            data.len(),
            features * n,
            "Batch::from_vec: length is not features × n"
        );
        Self { data, features, n }
    }

    pub fn features(&self) -> usize {
        self.features
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn as_slice(&self) -> &[f64] {
        &self.data
    }
    pub fn as_mut_slice(&mut self) -> &mut [f64] {
        &mut self.data
    }
    pub fn into_vec(self) -> Vec<f64> {
        self.data
    }
    /// Sample i's feature vector.
    pub fn col(&self, i: usize) -> &[f64] {
        &self.data[i * self.features..(i + 1) * self.features]
    }
    pub fn col_mut(&mut self, i: usize) -> &mut [f64] {
        let f = self.features;
        &mut self.data[i * f..(i + 1) * f]
    }
    pub fn mat(&self) -> MatRef<'_, f64> {
        MatRef::from_column_major_slice(&self.data, self.features, self.n)
    }
    pub fn mat_mut(&mut self) -> MatMut<'_, f64> {
        MatMut::from_column_major_slice_mut(&mut self.data, self.features, self.n)
    }
    /// A copy of the sub-batch of `features` rows starting at `start` (a column slice of features).
    pub fn rows(&self, start: usize, len: usize) -> Batch {
        let mut out = Batch::zeros(len, self.n);
        for i in 0..self.n {
            out.col_mut(i)
                .copy_from_slice(&self.col(i)[start..start + len]);
        }
        out
    }
    /// self += other, element-wise.
    pub fn add_assign(&mut self, other: &Batch) {
        assert_eq!((self.features, self.n), (other.features, other.n));
        for (a, b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
    }
    /// Adds the vector `b` (one value per feature) to every column: the bias of affine layers.
    pub fn add_to_columns(&mut self, b: &[f64]) {
        assert_eq!(
            b.len(),
            self.features,
            "add_to_columns: one value per feature"
        );
        for i in 0..self.n {
            for (v, bi) in self.col_mut(i).iter_mut().zip(b) {
                *v += bi;
            }
        }
    }
    pub fn dot(&self, other: &Batch) -> f64 {
        self.data.iter().zip(&other.data).map(|(a, b)| a * b).sum()
    }
    pub fn norm(&self) -> f64 {
        self.dot(self).sqrt()
    }
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

/// The parallelism faer uses for matrix products (the global setting: all rayon threads).
pub fn par() -> faer::Par {
    faer::get_global_parallelism()
}
