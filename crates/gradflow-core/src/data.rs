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
        let x = ball_points(&mut stream(seed, Stream::Inputs), d, n);
        Self {
            x,
            y: gaussian_targets(m, n, seed),
            graph: None,
        }
    }

    /// Images C×H×W (flattened c·H·W + h·W + w, PyTorch's order) uniform in the unit ball of
    /// R^{C·H·W}, and targets N(0, I_m) — `m` is the target length (for image-shaped targets,
    /// out_channels·H·W).
    pub fn images(
        n: usize,
        channels: usize,
        height: usize,
        width: usize,
        m: usize,
        seed: u64,
    ) -> Self {
        Self::ball(n, channels * height * width, m, seed)
    }

    /// Pairs for Siamese networks: x_i = [a_i; b_i] with a_i, b_i independent and uniform in the
    /// unit ball of R^d (2d features), targets N(0, I_m).
    pub fn pairs(n: usize, d: usize, m: usize, seed: u64) -> Self {
        let halves = ball_points(&mut stream(seed, Stream::Inputs), d, 2 * n);
        let mut x = Batch::zeros(2 * d, n);
        for i in 0..n {
            let col = x.col_mut(i);
            col[..d].copy_from_slice(halves.col(2 * i));
            col[d..].copy_from_slice(halves.col(2 * i + 1));
        }
        Self {
            x,
            y: gaussian_targets(m, n, seed),
            graph: None,
        }
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

/// `count` points uniform in the unit ball of R^dim: a Gaussian direction, radius U^{1/dim}.
fn ball_points(rng: &mut rand::rngs::StdRng, dim: usize, count: usize) -> Batch {
    let mut x = Batch::zeros(dim, count);
    for i in 0..count {
        let col = x.col_mut(i);
        loop {
            for v in col.iter_mut() {
                *v = StandardNormal.sample(rng);
            }
            let norm = col.iter().map(|v| v * v).sum::<f64>().sqrt();
            if norm > 0.0 {
                let u: f64 = rng.random();
                let r = u.powf(1.0 / dim as f64);
                col.iter_mut().for_each(|v| *v *= r / norm);
                break;
            }
        }
    }
    x
}

/// Targets y_i ~ N(0, I_m) from the targets stream of `seed`.
fn gaussian_targets(m: usize, n: usize, seed: u64) -> Batch {
    let mut ry = stream(seed, Stream::Targets);
    Batch::from_vec(
        m,
        n,
        (0..n * m).map(|_| StandardNormal.sample(&mut ry)).collect(),
    )
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
