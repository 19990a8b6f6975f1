//! The NTK at a sliding point of the flow. Where pre-activations slide along their kinks, the
//! flow is the Filippov field f = −∇L(θ; s_eff): each held entry takes the effective slope
//! s_eff ∈ [σ'(b⁻), σ'(b⁺)] that keeps it on its kink. So f = −J_effᵀ ∇_u L with J_eff the
//! Jacobian of that piecewise choice, and dL/dt = −‖J_effᵀ ∇_u L‖²: the kernel that decides
//! whether the loss keeps falling there is H_eff = J_eff J_effᵀ, not the one-sided H that f64
//! rounding would pick for an entry sitting 1e-17 from its kink (whose piece no certificate can
//! fix). [`filippov_ntk`] forms J_eff, its rounding bound (held entries are fixed linear pieces)
//! and H_eff's spectrum and certificate; [`flow_ntk`] also holds the entries the flow keeps on a
//! kink without pinning them (a ReLU unit dead exactly on its kink).

use super::system::KinkSystem;
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::LossKind;
use crate::model::Model;
use crate::ntk::{self, NtkOptions, NtkSummary};

/// The NTK summary at θ on the data's inputs, with `sliding` entries (global entry, piece left
/// of its knot, as a flow record lists them) held on their kinks: the Filippov kernel H_eff when
/// some are held and J fits the memory budget; the ordinary kernel when none are; the ordinary
/// one with a note saying so when J does not fit.
pub fn filippov_ntk(
    model: &Model,
    data: &Dataset,
    loss: LossKind,
    theta: &[f64],
    sliding: &[(usize, u16)],
    opts: &NtkOptions,
) -> Result<NtkSummary> {
    let x = &data.x;
    if sliding.is_empty() {
        return ntk::ntk_spectrum(model, theta, x, opts);
    }
    let need = ntk::jacobian_bytes(model, x.n());
    if need > opts.memory_budget_bytes {
        let mut s = ntk::ntk_spectrum(model, theta, x, opts)?;
        let note = format!(
            "{} pre-activations slide along their kinks here, and the Filippov kernel that sets \
             dL/dt needs J ({:.2} GB, over ntk.memory_budget_gb): this is the one-sided kernel",
            sliding.len(),
            need as f64 / 1e9
        );
        s.jacobian.jacobian_note = Some(match s.jacobian.jacobian_note.take() {
            Some(n) => format!("{note}; {n}"),
            None => note,
        });
        return Ok(s);
    }
    let specs = if opts.block_ranks {
        model.param_specs()
    } else {
        Vec::new()
    };
    let mut sys = KinkSystem::new(model, data, loss, theta, true)?;
    sys.hold(theta, sliding)?;
    let j = sys.pattern_jacobian(theta);
    // The rounding bound reads the held pattern, so it runs (when asked) before `sys` is
    // dropped and the layers are released.
    let bound = || ntk::jacobian_error_bound(model, theta, x);
    Ok(ntk::spectrum_of_jacobian(
        j,
        &specs,
        bound,
        opts,
        sliding.len(),
    ))
}

/// The NTK summary at a point of the flow: [`filippov_ntk`] with the `sliding` entries and the
/// dormant ones ([`KinkSystem::with_dormant`]: free on a kink the flow does not leave, e.g. a
/// ReLU unit that died exactly on it, whose piece f64 could not decide) held on their kinks.
/// Over the memory budget, [`filippov_ntk`] as it is.
pub fn flow_ntk(
    model: &Model,
    data: &Dataset,
    loss: LossKind,
    theta: &[f64],
    sliding: &[(usize, u16)],
    opts: &NtkOptions,
) -> Result<NtkSummary> {
    if ntk::jacobian_bytes(model, data.x.n()) > opts.memory_budget_bytes {
        return filippov_ntk(model, data, loss, theta, sliding, opts);
    }
    let held = KinkSystem::new(model, data, loss, theta, true)?.with_dormant(theta, sliding)?;
    filippov_ntk(model, data, loss, theta, &held, opts)
}
