//! The neural tangent kernel H(θ) = J Jᵀ: Gram matrices by structured routes (sample-wise
//! networks: [`gram`]; graph networks: [`graph_gram`] on sparse cotangents) or the Jacobian
//! ([`gram`]), extreme eigenvalues with accuracy bounds ([`spectrum`], [`lanczos`]), and the
//! one call most users want, [`ntk_spectrum`], which picks a dense or matrix-free route from a
//! memory budget and says which it took.
//!
//! Matrix-free, networks that do not mix samples (dnn, resnet) get block products by the
//! dense-layer kernel route ([`structured`]) and a preconditioned Davidson solve for λ_min
//! ([`matrix_free`], [`davidson`], [`precond`]); networks that mix samples (gcn), or that the
//! structured walker cannot read, get Lanczos on vjp + jvp products.
//!
//! The rank of J itself — exactly deficient or only ill-conditioned, by its singular values — is
//! in [`rank`], with activation patterns ([`patterns`]), rescaling symmetries ([`symmetry`]) and
//! a rigorous rounding bound on the computed J ([`jacobian_error`]); a proven lower bound on
//! λ_min(H) in [`certify`]; both gathered into every NTK summary by [`evidence`].
//!
//! The structured matrix-free products and the graph route read the network through one walker
//! ([`walk`]) over the layers' typed [`Structure`](crate::layers::Structure) — the graph route is
//! the sample-wise one extended by propagations and affine maps over propagated features; the
//! dense structured route recurses through `Layer::vjp_gram`, whose default dispatches on the
//! same structure.

pub mod block_krylov;
pub mod certify;
pub mod davidson;
pub mod double_double;
pub mod evidence;
pub mod gram;
pub mod graph_gram;
pub mod graph_terms;
pub mod jacobian_error;
pub mod lanczos;
pub mod matrix_free;
pub mod patterns;
pub mod precond;
pub mod rank;
pub mod sample_kernel;
pub mod sparse_cot;
pub mod spectrum;
pub mod structured;
pub mod symmetry;
pub mod walk;

pub use evidence::{evidence_of_jacobian, jacobian_bytes, jacobian_evidence, JacobianEvidence};
pub use gram::{gram, gram_bytes, gram_route, jacobian, GramRoute, NtkOperator};
pub use jacobian_error::jacobian_error_bound;
pub use matrix_free::{MatrixFreePlan, MatrixFreeResult};
pub use patterns::{activation_patterns, ActivationPatterns};
pub use rank::{
    analyse_jacobian, decide_rank, jacobian_rank, perturbation_persistence, JacobianRank,
    Persistence, RankDecision,
};
pub use spectrum::{
    dense_extremes, dense_extremes_owned, full_spectrum, matrix_free_extremes, Extremes,
};
pub use structured::StructuredNtk;
pub use symmetry::{rescaling_directions, symmetries, Symmetries};

use crate::batch::Batch;
use crate::error::{Error, Result};
use crate::model::Model;
use serde::Serialize;

/// Settings for [`ntk_spectrum`].
#[derive(Clone, Debug)]
pub struct NtkOptions {
    /// Bytes the dense route may use; past it the matrix-free route is taken.
    pub memory_budget_bytes: u64,
    /// Also compute every eigenvalue (dense route only).
    pub full_spectrum: bool,
    /// Relative tolerance: Lanczos and the dense λ_max stop when their residual is below tol·|θ|;
    /// the λ_min solves (dense: block Krylov on H⁻¹; matrix-free, sample-independent networks:
    /// preconditioned Davidson) below √tol·θ — the eigenvalue error is then of order
    /// residual²/gap, far below the residual.
    pub tol: f64,
    /// Most products per Lanczos run (matrix-free).
    pub max_iter: usize,
    /// Most products of the preconditioned λ_min solve (matrix-free, sample-independent
    /// networks).
    pub max_products: usize,
    /// Also analyse J itself where it fits the budget: its rank from its singular values and
    /// a certified λ_min ([`evidence`]).
    pub jacobian: bool,
    /// With `jacobian`: also each parameter tensor's block rank (one more SVD per tensor).
    pub block_ranks: bool,
}

impl Default for NtkOptions {
    fn default() -> Self {
        Self {
            memory_budget_bytes: 8 << 30,
            full_spectrum: false,
            tol: 1e-10,
            max_iter: 500,
            max_products: 4000,
            jacobian: true,
            block_ranks: true,
        }
    }
}

/// The spectrum summary of one state.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct NtkSummary {
    /// How H was handled; serialised as "structured", "structured-graph", "jacobian" or
    /// "matrix-free".
    pub route: GramRoute,
    /// nm, the size of H.
    pub dim: usize,
    pub p: usize,
    pub lambda_min: f64,
    pub lambda_max: f64,
    /// λ_max/λ_min; None when λ_min ≤ nm·ε·λ_max (singular to working precision: λ_min cannot
    /// be told from 0 in f64).
    pub condition: Option<f64>,
    pub lambda_min_accuracy: f64,
    pub method: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eigenvalues: Option<Vec<f64>>,
    /// Matrix-free preconditioned route only: r²/(θ₂ − λ_min), the Kato–Temple estimate of
    /// λ_min's error with the second Ritz value θ₂ standing in for λ₂ — an estimate, not a bound
    /// (`lambda_min_accuracy` is the rigorous residual bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda_min_error_estimate: Option<f64>,
    /// Operator products used (matrix-free routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub products: Option<usize>,
    /// J's rank, block ranks and the certified λ_min (where J fits the budget).
    #[serde(flatten)]
    pub jacobian: JacobianEvidence,
    /// At a point where the gradient flow slides (pre-activations held on kinks): how many
    /// entries were held. H is then the Filippov kernel J_eff J_effᵀ, J_eff taking each held
    /// entry's effective slope (see [`spectrum_of_jacobian`]). None off every kink surface.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_entries: Option<usize>,
}

/// λ_min, λ_max (and the spectrum if asked) of H(θ) on inputs x, by the dense route when the
/// Gram matrix fits `opts.memory_budget_bytes`, else matrix-free: for networks that do not mix
/// samples, preconditioned Davidson on structured block products (method `davidson+…`), else
/// Lanczos on vjp + jvp products (method `lanczos`). Errors when even the matrix-free route's
/// working memory exceeds the budget.
pub fn ntk_spectrum(
    model: &Model,
    theta: &[f64],
    x: &Batch,
    opts: &NtkOptions,
) -> Result<NtkSummary> {
    let start = std::time::Instant::now();
    let dim = x.n() * model.out_dim();
    let budget = opts.memory_budget_bytes;
    let jacobian = if opts.jacobian {
        jacobian_evidence(model, theta, x, budget, opts.block_ranks)
    } else {
        JacobianEvidence::default()
    };
    let summary = |route: GramRoute, ext: &Extremes, eigenvalues, estimate, products| NtkSummary {
        eigenvalues,
        lambda_min_error_estimate: estimate,
        products,
        ..NtkSummary::of_extremes(route, dim, model.p(), ext, start, jacobian.clone())
    };
    if gram_bytes(model, x.n()) <= budget {
        let (h, route) = gram(model, theta, x);
        let eig = opts.full_spectrum.then(|| full_spectrum(&h));
        let ext = dense_extremes_owned(h, opts.tol);
        return Ok(summary(route, &ext, eig, None, None));
    }
    let mb = |b: u64| b as f64 / (1u64 << 20) as f64;
    if !model.net.mixes_samples() {
        if let Ok(mut op) = StructuredNtk::new(model, theta, x) {
            let plan = MatrixFreePlan::for_budget(&op, model.p(), opts).ok_or_else(|| {
                Error::Invalid(format!(
                    "the NTK ({dim} × {dim}) does not fit the memory budget of {:.1} MiB \
                     (ntk.memory_budget_gb) even matrix-free: the structured products, an \
                     8-vector basis and λ_max's Lanczos basis need about {:.1} MiB; \
                     raise the budget",
                    mb(budget),
                    mb(matrix_free_minimum(&op, model.p())),
                ))
            })?;
            if matrix_free::check_against_operator(&mut op, model, theta, x, 7) <= 1e-8 {
                let r = matrix_free::preconditioned_extremes(&mut op, model, theta, x, &plan);
                let ext = Extremes {
                    lambda_min: r.lambda_min,
                    lambda_max: r.lambda_max,
                    lambda_min_accuracy: r.residual,
                    lambda_max_accuracy: r.lambda_max_residual,
                    method: r.method.clone(),
                    iterations: r.products_min + r.products_max,
                };
                let products = r.products_min + r.products_max + r.products_check + 2;
                return Ok(summary(
                    GramRoute::MatrixFree,
                    &ext,
                    None,
                    r.error_estimate,
                    Some(products),
                ));
            }
        }
    }
    // Lanczos keeps its whole basis, plus the operator's scratch (θ̄) and one evaluation.
    let need = (opts.max_iter.clamp(1, dim) as u64 + 4) * dim as u64 * 8 + 3 * model.p() as u64 * 8;
    if need > budget {
        return Err(Error::Invalid(format!(
            "the NTK ({dim} × {dim}) does not fit the memory budget of {:.1} MiB \
             (ntk.memory_budget_gb) even matrix-free: Lanczos with {} steps needs about {:.1} MiB; \
             raise the budget or lower the step count",
            mb(budget),
            opts.max_iter,
            mb(need)
        )));
    }
    let mut op = NtkOperator::new(model, theta, x);
    let ext = matrix_free_extremes(dim, &mut |v, o| op.apply(v, o), opts.max_iter, opts.tol);
    let products = ext.iterations + 2;
    Ok(summary(
        GramRoute::MatrixFree,
        &ext,
        None,
        None,
        Some(products),
    ))
}

/// The spectrum summary of H = J Jᵀ from a J formed elsewhere: the Filippov Jacobian J_eff of a
/// sliding point of the flow (`crate::flow::filippov_ntk`), where `sliding` entries are held on
/// their kinks with their effective slopes, so that dL/dt = −‖J_effᵀ ∇_u L‖² there. λ_min and
/// λ_max of the dense H (route "jacobian"), J's rank evidence, and the certificate with
/// `error_bound` (e ≥ ‖J − J̃‖_F, or why none exists); block ranks for `specs` (none if empty).
pub fn spectrum_of_jacobian(
    j: faer::Mat<f64>,
    specs: &[crate::layers::ParamSpec],
    error_bound: impl FnOnce() -> std::result::Result<f64, String>,
    opts: &NtkOptions,
    sliding: usize,
) -> NtkSummary {
    let start = std::time::Instant::now();
    let (dim, p) = (j.nrows(), j.ncols());
    let jacobian = evidence::evidence_of_jacobian(j.as_ref(), specs, error_bound);
    let h = &j * j.transpose();
    drop(j);
    let eigenvalues = opts.full_spectrum.then(|| full_spectrum(&h));
    let ext = dense_extremes_owned(h, opts.tol);
    NtkSummary {
        eigenvalues,
        sliding_entries: Some(sliding),
        ..NtkSummary::of_extremes(GramRoute::Jacobian, dim, p, &ext, start, jacobian)
    }
}

impl NtkSummary {
    /// The summary of H's extremes by `route` (nm = `dim`, p parameters), timed from `start`;
    /// the optional fields empty.
    fn of_extremes(
        route: GramRoute,
        dim: usize,
        p: usize,
        ext: &Extremes,
        start: std::time::Instant,
        jacobian: JacobianEvidence,
    ) -> Self {
        Self {
            route,
            dim,
            p,
            lambda_min: ext.lambda_min,
            lambda_max: ext.lambda_max,
            condition: Some(ext.condition()).filter(|c| c.is_finite()).filter(|_| {
                ext.lambda_min > matrix_free::working_precision_floor(dim, ext.lambda_max)
            }),
            lambda_min_accuracy: ext.lambda_min_accuracy,
            method: ext.method.clone(),
            seconds: start.elapsed().as_secs_f64(),
            eigenvalues: None,
            lambda_min_error_estimate: None,
            products: None,
            jacobian,
            sliding_entries: None,
        }
    }
}

/// The smallest working set of the structured matrix-free route (for error messages): the plan
/// of [`MatrixFreePlan::for_budget`] with an 8-vector basis, 50 Lanczos vectors, no
/// preconditioner.
fn matrix_free_minimum(op: &StructuredNtk<'_>, p: usize) -> u64 {
    let dim = op.dim() as u64;
    3 * op.bytes() + op.product_bytes(1) + p as u64 * 8 + (12 + 54 + 16) * dim * 8
}
