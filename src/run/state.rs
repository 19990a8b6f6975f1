//! The state a run carries from one record to the next — θ, GD's state, the bound tracker, the
//! loss series, NTK summaries, the kernel view's gaps, timings — in one serialisable
//! [`Checkpoint`], so a run stopped at an epoch boundary (GD) or after an accepted step (flow,
//! with the solver's [`FlowSnapshot`]) continues from `checkpoint.json` and ends bit-identical
//! to one that never stopped. Both loops keep their records here: an NTK
//! checkpoint ([`Checkpoint::ntk_checkpoint`]) is the same computation for GD and the flow.

use super::summary::{CertificationTally, KernelSummary};
use super::Prepared;
use crate::error::Result;
use crate::flow::kernel::{dense_kernel_affordable, kernel_view, Drift, Linearised};
use crate::flow::FlowSnapshot;
use crate::ntk::{self, NtkOptions, NtkSummary};
use crate::theory::BoundTracker;
use crate::train::GdState;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Relative size of the random perturbations of θ(0) that test whether an exact rank
/// deficiency of J persists, their number, and their seed.
pub const PERSISTENCE_REL: f64 = 1e-6;
pub const PERSISTENCE_DRAWS: usize = 5;
const PERSISTENCE_SEED: u64 = 0x5eed;

/// The state of a run between two records (GD epochs, or accepted steps of the flow solve).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The resolved config the run was started with (checked on resume).
    pub config_toml: String,
    /// θ at epoch `gd.epoch`.
    pub theta: Vec<f64>,
    pub gd: GdState,
    pub bound: Option<BoundTracker>,
    /// (t, loss) of every epoch evaluated so far.
    pub series_t: Vec<f64>,
    pub series_loss: Vec<f64>,
    pub ntk_first: Option<NtkSummary>,
    pub ntk_last: Option<NtkSummary>,
    pub max_lambda_max: Option<f64>,
    pub gradient_evaluations: u64,
    /// Wall-clock seconds spent before this checkpoint.
    pub seconds: f64,
    /// The linearised prediction's gap and the NTK drift so far.
    #[serde(default)]
    pub kernel: KernelSummary,
    /// Wall-clock seconds spent in NTK checkpoints, and their number, so far.
    #[serde(default)]
    pub ntk_seconds: f64,
    #[serde(default)]
    pub ntk_checkpoints: usize,
    /// Wall-clock seconds spent forming H(0) for the linearised prediction and the drift.
    #[serde(default)]
    pub kernel_view_seconds: f64,
    /// How many NTK checkpoints carried a certified λ_min > 0, and the first that did not.
    #[serde(default)]
    pub certification: CertificationTally,
    /// Flow runs: the solver's state and the comparison with GD (None for GD runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<FlowRunState>,
}

/// What a paused flow run continues from besides θ and the common state.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FlowRunState {
    /// The solve after its last accepted step.
    pub solver: FlowSnapshot,
    /// The comparison with GD so far: max θ gap, final θ gap, max relative loss gap, final GD
    /// loss (f64 bit patterns: NaN until the first output survives JSON).
    pub gd_comparison: [u64; 4],
}

impl Checkpoint {
    pub(super) fn fresh(prep: &Prepared) -> Self {
        Self {
            config_toml: prep.config.to_toml(),
            theta: prep.theta0.clone(),
            gd: GdState::default(),
            bound: None,
            series_t: Vec::new(),
            series_loss: Vec::new(),
            ntk_first: None,
            ntk_last: None,
            max_lambda_max: None,
            gradient_evaluations: 0,
            seconds: 0.0,
            kernel: KernelSummary::default(),
            ntk_seconds: 0.0,
            ntk_checkpoints: 0,
            kernel_view_seconds: 0.0,
            certification: CertificationTally::default(),
            flow: None,
        }
    }
}

impl Checkpoint {
    /// One NTK checkpoint of a run (GD epoch or flow output `index` at time t with loss L):
    /// the spectrum of H(θ) (the Filippov kernel where the flow holds `sliding` entries on
    /// their kinks), the bound L(0)·exp(−4c∫λ_min) checked, the NTK drift when `drift`
    /// is given, all recorded here; returns the ntk.csv row. `gd_step` = Some(η) for GD runs
    /// (the stability column η·c·λ_max), None for the flow.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn ntk_checkpoint(
        &mut self,
        prep: &Prepared,
        theta: &[f64],
        sliding: &[(usize, u16)],
        opts: &NtkOptions,
        drift: Option<&Drift>,
        c: f64,
        (index, t, loss): (usize, f64, f64),
        gd_step: Option<f64>,
    ) -> Result<[f64; 14]> {
        let clock = Instant::now();
        // Block ranks at the first checkpoint only (one SVD per tensor).
        let opts = NtkOptions {
            block_ranks: self.ntk_first.is_none(),
            ..opts.clone()
        };
        let (model, x) = (&prep.model, &prep.data.x);
        // Where entries slide (or, along the flow, rest on a kink), the kernel of the Filippov
        // field.
        let kind = prep.config.train.loss;
        let mut s = if gd_step.is_none() {
            crate::flow::flow_ntk(model, &prep.data, kind, theta, sliding, &opts)?
        } else {
            crate::flow::filippov_ntk(model, &prep.data, kind, theta, sliding, &opts)?
        };
        if self.ntk_first.is_none() && s.jacobian.is_exact_deficient() && s.p >= s.dim {
            // Is the deficiency of J(θ(0)) a property of an open set of θ, or a coincidence?
            s.jacobian.persistence = Some(ntk::rank::perturbation_persistence(
                model,
                theta,
                x,
                PERSISTENCE_REL,
                PERSISTENCE_DRAWS,
                PERSISTENCE_SEED,
            ));
        }
        self.certification.observe(t, &s);
        let chk = self
            .bound
            .get_or_insert_with(|| BoundTracker::new(c, loss))
            .observe(index, t, loss, s.lambda_min);
        let dr = drift.map_or(f64::NAN, |d| d.at(model, theta, x));
        self.kernel.observe_drift(dr);
        self.ntk_seconds += clock.elapsed().as_secs_f64();
        self.ntk_checkpoints += 1;
        let row = [
            index as f64,
            t,
            loss,
            s.lambda_min,
            s.lambda_max,
            s.condition.unwrap_or(f64::INFINITY),
            s.lambda_min_accuracy,
            chk.integral,
            chk.bound,
            chk.holds as u8 as f64,
            gd_step.map_or(f64::NAN, |lr| lr * c * s.lambda_max),
            dr,
            s.jacobian.jacobian_rank.map_or(f64::NAN, |r| r as f64),
            s.jacobian.lambda_min_lower.unwrap_or(f64::NAN),
        ];
        self.max_lambda_max = Some(
            self.max_lambda_max
                .map_or(s.lambda_max, |v| v.max(s.lambda_max)),
        );
        if self.ntk_first.is_none() {
            self.ntk_first = Some(s.clone());
        }
        self.ntk_last = Some(s);
        Ok(row)
    }
}

/// The linearised prediction and the NTK drift from H(0) when the dense kernel is affordable
/// within `budget` bytes (else neither), and the seconds it took.
pub(super) fn timed_kernel_view(
    prep: &Prepared,
    budget: u64,
) -> ((Option<Linearised>, Option<Drift>), f64) {
    let (model, data) = (&prep.model, &prep.data);
    let clock = Instant::now();
    let view = if dense_kernel_affordable(model, data.n(), budget) {
        kernel_view(
            model,
            &prep.theta0,
            &data.x,
            &data.y,
            prep.config.train.loss,
            prep.config.ntk.enabled,
        )
    } else {
        (None, None)
    };
    (view, clock.elapsed().as_secs_f64())
}
