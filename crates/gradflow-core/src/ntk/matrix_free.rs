//! The matrix-free λ_min / λ_max route for networks that do not mix samples, when the dense NTK
//! does not fit the memory budget (the paper's DNN: nm = 50,000, a 20 GB H).
//!
//! - products H V by the dense-layer kernel route ([`StructuredNtk`]), checked once against the
//!   plain vjp + jvp operator;
//! - λ_min by preconditioned Davidson ([`davidson_smallest`]) with the output-block preconditioner
//!   ([`OutputBlockPreconditioner`]), sized to the memory budget;
//! - λ_max by Lanczos on the same products (the top of an NTK is well separated: tens of steps);
//! - the answer is re-measured with one product of the independent [`NtkOperator`] (vjp + jvp):
//!   ρ = yᵀHy and r = ‖Hy − ρy‖ for the final unit vector y. Rigorously, ρ ≥ λ_min (a Rayleigh
//!   quotient) and some eigenvalue lies in [ρ − r, ρ + r]. If no eigenvalue lies between λ_min and
//!   the second Ritz value θ₂ of the final basis, Kato–Temple gives ρ − λ_min ≤ r²/(θ₂ − ρ); that
//!   premise is not verified (θ₂ only bounds λ₂ from above), so r²/(θ₂ − ρ) is reported as an
//!   *estimate* of the error, next to the rigorous r.

use super::davidson::{davidson_smallest, DavidsonOptions};
use super::gram::NtkOperator;
use super::lanczos::lanczos;
use super::precond::{Blocking, OutputBlockPreconditioner};
use super::structured::StructuredNtk;
use super::NtkOptions;
use crate::batch::Batch;
use crate::model::Model;
use faer::{Mat, MatRef};

/// Preconditioner blockings in order of preference; the first that fits the budget is taken
/// (else one kernel shared by all outputs, the Kronecker preconditioner (Θ ⊗ I)⁻¹, else none).
const PREFERENCE: [Blocking; 2] = [Blocking::Coupled(1), Blocking::Shared(5)];

/// How the preconditioned solve is set up (see [`MatrixFreePlan::for_budget`]).
#[derive(Clone, Debug)]
pub struct MatrixFreePlan {
    /// The preconditioner's blocking of output directions; None = no preconditioner.
    pub blocking: Option<Blocking>,
    /// Rotate outputs to the eigenbasis of Σ_i H_ii before grouping.
    pub rotate: bool,
    /// Davidson basis size, Ritz vectors kept at a restart, vectors added per step.
    pub max_basis: usize,
    pub keep: usize,
    pub block: usize,
    /// Davidson stops at ‖Hy − θy‖ ≤ tol·θ …
    pub tol: f64,
    /// … or after this many products.
    pub max_products: usize,
    /// Lanczos steps for λ_max and its relative tolerance.
    pub top_iter: usize,
    pub top_tol: f64,
    /// Bytes the plan needs (operator, basis, preconditioner, Lanczos basis, checks).
    pub bytes: u64,
}

/// What the matrix-free route found.
#[derive(Clone, Debug)]
pub struct MatrixFreeResult {
    /// ρ = yᵀHy by the independent vjp + jvp product (≥ λ_min).
    pub lambda_min: f64,
    /// ‖Hy − ρy‖ by the same product: an eigenvalue of H lies within it of ρ.
    pub residual: f64,
    /// r²/(θ₂ − ρ): the Kato–Temple error estimate (not rigorous, see the module docs).
    pub error_estimate: Option<f64>,
    /// The second Ritz value θ₂ of the final basis.
    pub second_ritz: Option<f64>,
    pub lambda_max: f64,
    pub lambda_max_residual: f64,
    /// Products for λ_min, for λ_max, and the checks.
    pub products_min: usize,
    pub products_max: usize,
    pub products_check: usize,
    pub converged: bool,
    /// Seconds to build the preconditioner.
    pub setup_seconds: f64,
    pub method: String,
    pub plan: MatrixFreePlan,
}

impl MatrixFreePlan {
    /// The strongest plan that fits `opts.memory_budget_bytes`: preconditioner blocks by
    /// [`PREFERENCE`] (then one shared kernel, then none); Davidson basis 32 (at least 8 — 48 and
    /// 64 took no fewer products at paper scale); λ_max's Lanczos basis `opts.max_iter` (cut down
    /// to 50 if needed). Davidson stops at a residual of √tol·θ or `opts.max_products`, Lanczos at
    /// tol. None if even the minimum (operator, 8-vector basis, 50 Lanczos vectors, no
    /// preconditioner) does not fit.
    pub fn for_budget(op: &StructuredNtk<'_>, p: usize, opts: &NtkOptions) -> Option<Self> {
        let budget = opts.memory_budget_bytes;
        let (n, m, dim) = (op.n(), op.m(), op.dim());
        let vec_bytes = (dim * 8) as u64;
        let widths = op.affine_width();
        let base = 3 * op.bytes() + op.product_bytes(1) + (p * 8) as u64 + 12 * vec_bytes;
        let lanczos_bytes = |steps: usize| (steps as u64 + 4) * vec_bytes;
        let mut top_iter = opts.max_iter.clamp(1, dim);
        let small = top_iter.min(50);
        while top_iter > small && base + lanczos_bytes(top_iter) + 16 * vec_bytes > budget {
            top_iter = (top_iter / 2).max(small);
        }
        let fixed = base + lanczos_bytes(top_iter);
        let basis_bytes = |b: usize| 2 * b as u64 * vec_bytes;
        let mut plan = Self {
            blocking: None,
            rotate: false,
            max_basis: 8,
            keep: 3,
            block: 1,
            tol: opts.tol.sqrt(),
            max_products: opts.max_products,
            top_iter,
            top_tol: opts.tol,
            bytes: fixed + basis_bytes(8),
        };
        if plan.bytes > budget {
            return None;
        }
        for basis in [32usize, 16] {
            if fixed + basis_bytes(basis) <= budget {
                plan.max_basis = basis;
                plan.keep = basis / 4;
                plan.bytes = fixed + basis_bytes(basis);
                break;
            }
        }
        // Factoring must cost at most ~100 products (a product is ≈ 4·n·p flops): large n
        // moves the choice to shared kernels (the last candidate is always affordable).
        let product_flops = 4.0 * n as f64 * p as f64;
        let candidates: Vec<Blocking> = PREFERENCE
            .iter()
            .copied()
            .chain([Blocking::Shared(m)])
            .collect();
        for (c, &blocking) in candidates.iter().enumerate() {
            let pre = OutputBlockPreconditioner::bytes(n, m, blocking, widths);
            let affordable = c + 1 == candidates.len()
                || OutputBlockPreconditioner::factor_flops(n, m, blocking) <= 100.0 * product_flops;
            if affordable && plan.bytes + pre <= budget {
                plan.blocking = Some(blocking);
                plan.bytes += pre;
                let rot = OutputBlockPreconditioner::rotation_bytes(n, m, widths);
                if plan.bytes + rot <= budget {
                    plan.rotate = true;
                }
                break;
            }
        }
        Some(plan)
    }
}

/// dim·ε·λ_max: below it λ_min of a dim × dim PSD matrix cannot be told from 0 in f64 (the
/// accuracy the dense eigensolver reports).
pub fn working_precision_floor(dim: usize, lambda_max: f64) -> f64 {
    dim as f64 * f64::EPSILON * lambda_max.abs()
}

fn unit(v: &mut [f64]) {
    let nv = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if nv > 0.0 {
        v.iter_mut().for_each(|x| *x /= nv);
    }
}

/// ρ = yᵀHy and ‖Hy − ρy‖ for the unit vector y, by one product of the plain vjp + jvp operator.
pub fn independent_rayleigh(model: &Model, theta: &[f64], x: &Batch, y: &[f64]) -> (f64, f64) {
    let mut op = NtkOperator::new(model, theta, x);
    let mut hy = vec![0.0; y.len()];
    op.apply(y, &mut hy);
    let rho: f64 = hy.iter().zip(y).map(|(a, b)| a * b).sum();
    let res = hy
        .iter()
        .zip(y)
        .map(|(a, b)| (a - rho * b).powi(2))
        .sum::<f64>()
        .sqrt();
    (rho, res)
}

/// Checks the structured product against the plain operator on one random vector; returns the
/// relative difference.
pub fn check_against_operator(
    op: &mut StructuredNtk<'_>,
    model: &Model,
    theta: &[f64],
    x: &Batch,
    seed: u64,
) -> f64 {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = crate::rng::stream(seed, crate::rng::Stream::Init);
    let v: Vec<f64> = (0..op.dim())
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let hv = op.apply_block(MatRef::from_column_major_slice(&v, v.len(), 1));
    let mut plain = NtkOperator::new(model, theta, x);
    let mut hv2 = vec![0.0; v.len()];
    plain.apply(&v, &mut hv2);
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, b) in hv2.iter().enumerate() {
        num += (hv[(i, 0)] - b).powi(2);
        den += b * b;
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// λ_min (preconditioned Davidson) and λ_max (Lanczos) of H by the plan, with the final λ_min
/// re-measured by the independent operator.
pub fn preconditioned_extremes(
    op: &mut StructuredNtk<'_>,
    model: &Model,
    theta: &[f64],
    x: &Batch,
    plan: &MatrixFreePlan,
) -> MatrixFreeResult {
    let dim = op.dim();
    let t0 = std::time::Instant::now();
    let pre = plan
        .blocking
        .map(|b| OutputBlockPreconditioner::new(op, b, plan.rotate));
    let setup_seconds = t0.elapsed().as_secs_f64();
    // λ_max first: it sets the working-precision floor dim·ε·λ_max below which λ_min cannot be
    // told from 0 (the dense eigensolver's accuracy), where Davidson may stop at once.
    let start_products = op.products;
    let top = lanczos(
        dim,
        &mut |v, out| {
            let hv = op.apply_block(MatRef::from_column_major_slice(v, v.len(), 1));
            for (i, o) in out.iter_mut().enumerate() {
                *o = hv[(i, 0)];
            }
        },
        true,
        plan.top_iter,
        plan.top_tol,
        11,
    );
    let products_max = op.products - start_products;
    let floor = working_precision_floor(dim, top.value);
    let start_products = op.products;
    let dopts = DavidsonOptions {
        max_basis: plan.max_basis,
        keep: plan.keep,
        tol: plan.tol,
        max_products: plan.max_products,
        block: plan.block,
        seed: 12,
        stop_below: floor,
    };
    let mut apply = |v: MatRef<'_, f64>| op.apply_block(v);
    let mut precond = |r: MatRef<'_, f64>| -> Mat<f64> {
        match &pre {
            Some(p) => p.apply(r),
            None => r.to_owned(),
        }
    };
    let d = davidson_smallest(dim, &mut apply, &mut precond, &dopts);
    drop(pre);
    let products_min = op.products - start_products;
    let mut y = d.vector.clone();
    unit(&mut y);
    let (rho, mut residual) = independent_rayleigh(model, theta, x, &y);
    // Below the floor: 0 ≤ λ_min ≤ ρ (ρ is a Rayleigh quotient of the PSD H), so ρ itself bounds
    // the error — far tighter than an unconverged residual.
    let singular = rho <= floor;
    if singular {
        residual = residual.min(rho.max(0.0));
    }
    let error_estimate = d
        .second
        .filter(|&t2| t2 > rho)
        .map(|t2| residual * residual / (t2 - rho));
    let method = match plan.blocking {
        None => "davidson".to_string(),
        Some(b) => {
            let how = match b {
                Blocking::Coupled(1) | Blocking::Shared(1) => String::new(),
                Blocking::Coupled(g) => format!("({g} coupled)"),
                Blocking::Shared(g) => format!("({g} shared)"),
            };
            let rot = if plan.rotate { "rotated-" } else { "" };
            format!("davidson+{rot}output-block-jacobi{how}")
        }
    };
    let method = if singular {
        format!("{method} (stopped below dim·ε·λ_max: singular to working precision)")
    } else {
        method
    };
    MatrixFreeResult {
        lambda_min: rho,
        residual,
        error_estimate,
        second_ritz: d.second,
        lambda_max: top.value,
        lambda_max_residual: top.residual,
        products_min,
        products_max,
        products_check: 1,
        converged: d.converged || singular,
        setup_seconds,
        method,
        plan: plan.clone(),
    }
}
