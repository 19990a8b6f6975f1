//! The neural tangent kernel H(θ) = J Jᵀ: Gram matrices by structured or Jacobian routes
//! ([`gram`]), extreme eigenvalues with accuracy bounds ([`spectrum`], [`lanczos`]), and the
//! one call most users want, [`ntk_spectrum`], which picks a dense or matrix-free route from a
//! memory budget and says which it took.

pub mod block_krylov;
pub mod gram;
pub mod lanczos;
pub mod spectrum;

pub use gram::{gram, gram_bytes, gram_route, jacobian, GramRoute, NtkOperator};
pub use spectrum::{dense_extremes, full_spectrum, matrix_free_extremes, Extremes};

use crate::batch::Batch;
use crate::model::Model;
use serde::Serialize;

/// Settings for [`ntk_spectrum`].
#[derive(Clone, Debug)]
pub struct NtkOptions {
    /// Bytes the dense route may use; past it the matrix-free route is taken.
    pub memory_budget_bytes: u64,
    /// Also compute every eigenvalue (dense route only).
    pub full_spectrum: bool,
    /// Relative tolerance of Lanczos.
    pub tol: f64,
    /// Most products per Lanczos run (matrix-free).
    pub max_iter: usize,
}

impl Default for NtkOptions {
    fn default() -> Self {
        Self {
            memory_budget_bytes: 8 << 30,
            full_spectrum: false,
            tol: 1e-10,
            max_iter: 500,
        }
    }
}

/// The spectrum summary of one state.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NtkSummary {
    /// "structured", "jacobian" or "matrix-free".
    pub route: String,
    /// nm, the size of H.
    pub dim: usize,
    pub p: usize,
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// λ_max/λ_min; None when λ_min ≤ 0 (singular to working precision).
    pub condition: Option<f64>,
    pub lambda_min_accuracy: f64,
    pub method: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eigenvalues: Option<Vec<f64>>,
}

/// λ_min, λ_max (and the spectrum if asked) of H(θ) on inputs x, by the dense route when the
/// Gram matrix fits `opts.memory_budget_bytes`, else matrix-free.
pub fn ntk_spectrum(model: &Model, theta: &[f64], x: &Batch, opts: &NtkOptions) -> NtkSummary {
    let start = std::time::Instant::now();
    let dim = x.n() * model.out_dim();
    let (route, ext, eigenvalues) = if gram_bytes(model, x.n()) <= opts.memory_budget_bytes {
        let (h, route) = gram(model, theta, x);
        let ext = dense_extremes(&h, opts.tol);
        let eig = opts.full_spectrum.then(|| full_spectrum(&h));
        (route.name().to_string(), ext, eig)
    } else {
        let mut op = NtkOperator::new(model, theta, x);
        let ext = matrix_free_extremes(dim, &mut |v, o| op.apply(v, o), opts.max_iter, opts.tol);
        ("matrix-free".to_string(), ext, None)
    };
    NtkSummary {
        route,
        dim,
        p: model.p(),
        lambda_min: ext.lambda_min,
        lambda_max: ext.lambda_max,
        condition: Some(ext.condition()).filter(|c| c.is_finite()),
        lambda_min_accuracy: ext.lambda_min_accuracy,
        method: ext.method.clone(),
        seconds: start.elapsed().as_secs_f64(),
        eigenvalues,
    }
}
