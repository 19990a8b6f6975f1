//! Activation functions σ of eq. (1): continuous, piecewise polynomial (or sigmoid), each with its
//! derivative, plus the classifier that says whether σ meets Theorem 3.1's hypothesis.
//!
//! Conventions at a kink (a breakpoint where the derivative jumps) follow PyTorch: the derivative
//! at z = b is that of the piece to the left of b (for leaky ReLU, z > 0 ⇒ 1, else α). The choice
//! only matters on a measure-zero set, but it is fixed so that results are reproducible.
//!
//! Parametric ReLU carries its slope as a trainable parameter; `value_with_slope` and friends take
//! that slope explicitly, so the layer that owns the parameter passes it in.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A continuous function made of polynomial pieces.
///
/// `breakpoints` b_1 < … < b_{K−1} split R into K pieces (−∞, b_1], (b_1, b_2], …, (b_{K−1}, ∞).
/// `coefficients[k]` are the coefficients of piece k in increasing powers: c₀ + c₁ z + c₂ z² + ….
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PiecewisePolynomial {
    pub breakpoints: Vec<f64>,
    pub coefficients: Vec<Vec<f64>>,
}

/// Why a piecewise polynomial was rejected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PiecewiseError {
    #[error("`coefficients` must have one entry per piece: {pieces} pieces need {pieces} coefficient lists for {breaks} breakpoints, got {got}")]
    PieceCount {
        pieces: usize,
        breaks: usize,
        got: usize,
    },
    #[error("`breakpoints` must be finite and strictly increasing (problem at index {index})")]
    Breakpoints { index: usize },
    #[error("piece {piece} has no coefficients; give at least the constant term, e.g. [0.0]")]
    EmptyPiece { piece: usize },
    #[error("coefficient {index} of piece {piece} is not finite")]
    NonFinite { piece: usize, index: usize },
    #[error("the activation is discontinuous at breakpoint {at}: the left piece gives {left}, the right piece gives {right}; adjust the constant terms so that both agree")]
    Discontinuous { at: f64, left: f64, right: f64 },
}

fn poly(c: &[f64], z: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * z + ci)
}

fn poly_deriv(c: &[f64], z: f64) -> f64 {
    let mut acc = 0.0;
    for (k, &ck) in c.iter().enumerate().skip(1).rev() {
        acc = acc * z + k as f64 * ck;
    }
    acc
}

impl PiecewisePolynomial {
    /// Builds and validates: piece count, increasing finite breakpoints, finite coefficients,
    /// continuity at every breakpoint (to a relative tolerance of 1e-9).
    pub fn new(breakpoints: Vec<f64>, coefficients: Vec<Vec<f64>>) -> Result<Self, PiecewiseError> {
        let pw = Self {
            breakpoints,
            coefficients,
        };
        pw.validate()?;
        Ok(pw)
    }

    pub fn validate(&self) -> Result<(), PiecewiseError> {
        let pieces = self.breakpoints.len() + 1;
        if self.coefficients.len() != pieces {
            return Err(PiecewiseError::PieceCount {
                pieces,
                breaks: self.breakpoints.len(),
                got: self.coefficients.len(),
            });
        }
        for (i, b) in self.breakpoints.iter().enumerate() {
            if !b.is_finite() || (i > 0 && *b <= self.breakpoints[i - 1]) {
                return Err(PiecewiseError::Breakpoints { index: i });
            }
        }
        for (k, c) in self.coefficients.iter().enumerate() {
            if c.is_empty() {
                return Err(PiecewiseError::EmptyPiece { piece: k });
            }
            if let Some(index) = c.iter().position(|v| !v.is_finite()) {
                return Err(PiecewiseError::NonFinite { piece: k, index });
            }
        }
        for (i, &b) in self.breakpoints.iter().enumerate() {
            let left = poly(&self.coefficients[i], b);
            let right = poly(&self.coefficients[i + 1], b);
            let scale = 1.0 + left.abs().max(right.abs());
            if (left - right).abs() > 1e-9 * scale {
                return Err(PiecewiseError::Discontinuous { at: b, left, right });
            }
        }
        Ok(())
    }

    /// Index of the piece holding z: the k with b_k < z ≤ b_{k+1}.
    pub fn piece(&self, z: f64) -> usize {
        self.breakpoints.partition_point(|&b| b < z)
    }

    pub fn value(&self, z: f64) -> f64 {
        poly(&self.coefficients[self.piece(z)], z)
    }

    pub fn derivative(&self, z: f64) -> f64 {
        poly_deriv(&self.coefficients[self.piece(z)], z)
    }

    /// True when some piece is the zero polynomial, so σ vanishes on a whole interval.
    pub fn has_zero_piece(&self) -> bool {
        self.coefficients
            .iter()
            .any(|c| c.iter().all(|&v| v == 0.0))
    }

    /// True when this function is ReLU, max(z, 0), however its pieces are split: every piece left
    /// of 0 is the zero polynomial, every piece right of 0 is z, and no piece straddles 0.
    pub fn is_relu(&self) -> bool {
        let trim = |c: &[f64]| {
            let mut v = c.to_vec();
            while v.len() > 1 && *v.last().unwrap() == 0.0 {
                v.pop();
            }
            v
        };
        let k = self.coefficients.len();
        (0..k).all(|i| {
            let lo = if i == 0 {
                f64::NEG_INFINITY
            } else {
                self.breakpoints[i - 1]
            };
            let hi = if i + 1 == k {
                f64::INFINITY
            } else {
                self.breakpoints[i]
            };
            let c = trim(&self.coefficients[i]);
            if hi <= 0.0 {
                c == [0.0]
            } else if lo >= 0.0 {
                c == [0.0, 1.0]
            } else {
                false
            }
        })
    }

    /// The piecewise-linear interpolant of `f` on `pieces` equal intervals of [lo, hi], constant
    /// outside — a continuous piecewise polynomial that converges uniformly to a continuous `f`
    /// as the pieces shrink (used for Cor. 3.1.2's sigmoid approximations).
    ///
    /// Errors when [lo, hi] is not a proper finite interval or f is not finite at the nodes.
    pub fn interpolate(
        f: impl Fn(f64) -> f64,
        lo: f64,
        hi: f64,
        pieces: usize,
    ) -> Result<Self, PiecewiseError> {
        if !(lo.is_finite() && hi.is_finite() && hi > lo) {
            return Err(PiecewiseError::Breakpoints { index: 0 });
        }
        let pieces = pieces.max(1);
        let h = (hi - lo) / pieces as f64;
        let xs: Vec<f64> = (0..=pieces).map(|k| lo + h * k as f64).collect();
        let mut coefficients = vec![vec![f(lo)]];
        for k in 0..pieces {
            let (x0, x1) = (xs[k], xs[k + 1]);
            let (y0, y1) = (f(x0), f(x1));
            let slope = (y1 - y0) / (x1 - x0);
            coefficients.push(vec![y0 - slope * x0, slope]);
        }
        coefficients.push(vec![f(hi)]);
        Self::new(xs, coefficients)
    }
}

/// The activation σ applied element-wise between layers.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// max(z, αz) with fixed α (PyTorch's default α = 0.01).
    LeakyRelu {
        slope: f64,
    },
    /// max(z, a z) with a trainable slope a (one per layer, initialised to `init`, PyTorch's 0.25).
    Prelu {
        init: f64,
    },
    Relu,
    Sigmoid,
    Piecewise(PiecewisePolynomial),
}

/// Where an activation stands with respect to the paper's results.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ActivationClass {
    /// Continuous, piecewise polynomial, finitely many zeros: Theorem 3.1 applies directly.
    Theorem31,
    /// ReLU: covered only through Corollary 3.1.1 (the α → 0 limit of leaky ReLU).
    Corollary311,
    /// Sigmoid: covered only through Corollary 3.1.2 (uniform piecewise-polynomial approximation).
    Corollary312,
    /// Neither: the paper's results say nothing.
    NotCovered,
}

impl ActivationClass {
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Theorem31 => "meets Theorem 3.1's hypothesis (continuous piecewise polynomial, finitely many zeros)",
            Self::Corollary311 => "ReLU: not piecewise non-zero; covered only by Corollary 3.1.1 (limit of leaky ReLU)",
            Self::Corollary312 => "sigmoid: not piecewise polynomial; covered only by Corollary 3.1.2 (uniform piecewise-polynomial limit)",
            Self::NotCovered => "not covered: σ vanishes on a whole interval (infinitely many zeros) and is not ReLU",
        }
    }
    pub fn short(&self) -> &'static str {
        match self {
            Self::Theorem31 => "theorem-3.1",
            Self::Corollary311 => "corollary-3.1.1",
            Self::Corollary312 => "corollary-3.1.2",
            Self::NotCovered => "not-covered",
        }
    }
}

impl Activation {
    /// PyTorch's `nn.LeakyReLU()` default.
    pub const DEFAULT_LEAKY_SLOPE: f64 = 0.01;
    /// PyTorch's `nn.PReLU()` default initial slope.
    pub const DEFAULT_PRELU_INIT: f64 = 0.25;

    pub fn leaky_relu() -> Self {
        Self::LeakyRelu {
            slope: Self::DEFAULT_LEAKY_SLOPE,
        }
    }

    /// Number of trainable parameters σ carries (1 for PReLU).
    pub fn num_params(&self) -> usize {
        matches!(self, Self::Prelu { .. }) as usize
    }

    pub fn classify(&self) -> ActivationClass {
        match self {
            Self::LeakyRelu { slope } if *slope != 0.0 => ActivationClass::Theorem31,
            Self::LeakyRelu { .. } | Self::Relu => ActivationClass::Corollary311,
            // Almost surely a trained slope a ≠ 0; the init must be non-zero for that.
            Self::Prelu { init } if *init != 0.0 => ActivationClass::Theorem31,
            Self::Prelu { .. } => ActivationClass::Corollary311,
            Self::Sigmoid => ActivationClass::Corollary312,
            Self::Piecewise(p) if p.is_relu() => ActivationClass::Corollary311,
            Self::Piecewise(p) if p.has_zero_piece() => ActivationClass::NotCovered,
            Self::Piecewise(_) => ActivationClass::Theorem31,
        }
    }

    /// True when σ has kinks (points where σ' jumps), i.e. the flow is only piecewise smooth.
    pub fn has_kinks(&self) -> bool {
        match self {
            Self::Sigmoid => false,
            Self::Piecewise(p) => !p.breakpoints.is_empty(),
            _ => true,
        }
    }

    /// Breakpoints of σ (where its derivative may jump).
    pub fn kinks(&self) -> Vec<f64> {
        match self {
            Self::Sigmoid => vec![],
            Self::Piecewise(p) => p.breakpoints.clone(),
            _ => vec![0.0],
        }
    }

    /// σ(z); `slope` is the PReLU parameter (ignored by the others).
    #[inline]
    pub fn value(&self, z: f64, slope: f64) -> f64 {
        match self {
            Self::LeakyRelu { slope: a } => {
                if z > 0.0 {
                    z
                } else {
                    a * z
                }
            }
            Self::Prelu { .. } => {
                if z > 0.0 {
                    z
                } else {
                    slope * z
                }
            }
            Self::Relu => z.max(0.0),
            Self::Sigmoid => sigmoid(z),
            Self::Piecewise(p) => p.value(z),
        }
    }

    /// σ'(z) (left derivative at a kink, as PyTorch).
    #[inline]
    pub fn derivative(&self, z: f64, slope: f64) -> f64 {
        match self {
            Self::LeakyRelu { slope: a } => {
                if z > 0.0 {
                    1.0
                } else {
                    *a
                }
            }
            Self::Prelu { .. } => {
                if z > 0.0 {
                    1.0
                } else {
                    slope
                }
            }
            Self::Relu => (z > 0.0) as u8 as f64,
            Self::Sigmoid => {
                let s = sigmoid(z);
                s * (1.0 - s)
            }
            Self::Piecewise(p) => p.derivative(z),
        }
    }

    /// σ on piece `k` (the polynomial of that piece, continued beyond its interval), used by the
    /// flow solver to keep a Runge–Kutta step on one smooth piece; `slope` as in [`Self::value`].
    #[inline]
    pub fn piece_value(&self, k: usize, z: f64, slope: f64) -> f64 {
        match self {
            Self::LeakyRelu { slope: a } => [a * z, z][k.min(1)],
            Self::Prelu { .. } => [slope * z, z][k.min(1)],
            Self::Relu => [0.0, z][k.min(1)],
            Self::Sigmoid => sigmoid(z),
            Self::Piecewise(p) => poly(&p.coefficients[k], z),
        }
    }

    /// σ' on piece `k`, continued beyond its interval.
    #[inline]
    pub fn piece_derivative(&self, k: usize, z: f64, slope: f64) -> f64 {
        match self {
            Self::LeakyRelu { slope: a } => [*a, 1.0][k.min(1)],
            Self::Prelu { .. } => [slope, 1.0][k.min(1)],
            Self::Relu => [0.0, 1.0][k.min(1)],
            Self::Sigmoid => self.derivative(z, slope),
            Self::Piecewise(p) => poly_deriv(&p.coefficients[k], z),
        }
    }

    /// ∂σ/∂a on piece `k` (PReLU only).
    #[inline]
    pub fn piece_slope_derivative(&self, k: usize, z: f64) -> f64 {
        match self {
            Self::Prelu { .. } if k == 0 => z,
            _ => 0.0,
        }
    }

    /// ∂σ/∂a for PReLU's slope a (zero for the others).
    #[inline]
    pub fn slope_derivative(&self, z: f64) -> f64 {
        match self {
            Self::Prelu { .. } => z.min(0.0),
            _ => 0.0,
        }
    }

    pub fn name(&self) -> String {
        self.to_string()
    }

    /// True when σ(cz) = cσ(z) for every c > 0 (whatever the PReLU slope): ReLU, leaky ReLU,
    /// PReLU, and piecewise functions whose every piece is s·z (breakpoints then only at 0).
    pub fn is_positively_homogeneous(&self) -> bool {
        match self {
            Self::LeakyRelu { .. } | Self::Prelu { .. } | Self::Relu => true,
            Self::Sigmoid => false,
            Self::Piecewise(p) => {
                p.breakpoints.iter().all(|&b| b == 0.0)
                    && p.coefficients.iter().all(|c| {
                        c.first().is_none_or(|&c0| c0 == 0.0)
                            && c.iter().skip(2).all(|&ck| ck == 0.0)
                    })
            }
        }
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LeakyRelu { slope } => write!(f, "leaky-relu(α={slope})"),
            Self::Prelu { init } => write!(f, "prelu(a₀={init})"),
            Self::Relu => write!(f, "relu"),
            Self::Sigmoid => write!(f, "sigmoid"),
            Self::Piecewise(p) => write!(f, "piecewise({} pieces)", p.coefficients.len()),
        }
    }
}

#[inline]
pub fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}
