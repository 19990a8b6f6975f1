//! Training data: the paper's synthetic set (inputs uniform in the unit ball of R^d, targets
//! N(0, I_m) — random labels as in Zhang et al. 2017), user data from .npy files, and the
//! checks every dataset passes before training (shapes, finiteness, non-empty).

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::rng::{stream, Stream};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};
use std::path::Path;

/// Inputs x (d × n), targets y (m × n), and, for graph models, the graph on the n samples.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub x: Batch,
    pub y: Batch,
    pub graph: Option<Graph>,
}

impl Dataset {
    pub fn n(&self) -> usize {
        self.x.n()
    }
    pub fn d(&self) -> usize {
        self.x.features()
    }
    pub fn m(&self) -> usize {
        self.y.features()
    }

    /// The paper's Section 4 data: x_i uniform in the unit ball of R^d (direction uniform on the
    /// sphere, radius U^{1/d}), y_i ~ N(0, I_m); two independent streams of `seed`.
    pub fn ball(n: usize, d: usize, m: usize, seed: u64) -> Self {
        let mut rx = stream(seed, Stream::Inputs);
        let mut x = Batch::zeros(d, n);
        for i in 0..n {
            let col = x.col_mut(i);
            loop {
                for v in col.iter_mut() {
                    *v = StandardNormal.sample(&mut rx);
                }
                let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
                if norm > 0.0 {
                    let u: f64 = rx.random();
                    let r = u.powf(1.0 / d as f64);
                    col.iter_mut().for_each(|v| *v *= r / norm);
                    break;
                }
            }
        }
        let mut ry = stream(seed, Stream::Targets);
        let y = Batch::from_vec(
            m,
            n,
            (0..n * m).map(|_| StandardNormal.sample(&mut ry)).collect(),
        );
        Self { x, y, graph: None }
    }

    /// Wraps row-major arrays x (n × d) and y (n × m) — the layout of `x.npy`/`y.npy` — after
    /// checking them; `x_label`/`y_label` name the sources in errors.
    pub fn from_rows(
        x: Vec<f64>,
        (xn, d): (usize, usize),
        y: Vec<f64>,
        (yn, m): (usize, usize),
        x_label: &Path,
        y_label: &Path,
    ) -> Result<Self> {
        if xn == 0 || d == 0 {
            return Err(Error::input(
                x_label,
                format!("x is empty ({xn} × {d}); it must be n × d with n, d ≥ 1"),
            ));
        }
        if yn == 0 || m == 0 {
            return Err(Error::input(
                y_label,
                format!("y is empty ({yn} × {m}); it must be n × m with n, m ≥ 1"),
            ));
        }
        if xn != yn {
            return Err(Error::input(
                y_label,
                format!(
                    "y has {yn} rows but x has {xn}: x must be n × d and y n × m for the same n"
                ),
            ));
        }
        check_finite(&x, d, x_label)?;
        check_finite(&y, m, y_label)?;
        Ok(Self {
            x: Batch::from_vec(d, xn, x),
            y: Batch::from_vec(m, yn, y),
            graph: None,
        })
    }

    /// Loads x (n × d) and y (n × m) from .npy files (f64 or f32).
    pub fn from_npy(x_path: &Path, y_path: &Path) -> Result<Self> {
        let (x, xn, d) = crate::io::npy::read_matrix(x_path)?;
        let (y, yn, m) = crate::io::npy::read_matrix(y_path)?;
        Self::from_rows(x, (xn, d), y, (yn, m), x_path, y_path)
    }
}

fn check_finite(data: &[f64], cols: usize, label: &Path) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(k) => Err(Error::input(
            label,
            format!(
                "entry [{}, {}] is {} — the data must be finite: remove or impute that sample",
                k / cols,
                k % cols,
                data[k]
            ),
        )),
    }
}
