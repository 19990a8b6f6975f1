//! Full-batch gradient descent θ_{k+1} = θ_k − η ∇L(θ_k): explicit Euler on the gradient flow,
//! step k standing for flow time t = kη (the paper's simulation). The loop reports every epoch
//! to an observer (metrics, NTK checkpoints, progress, interruption) and stops with a clear
//! message when the loss stops being finite.

pub use crate::config::Precision;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kinks::{KinkStep, KinkSummary, KinkTracker};
use crate::loss::LossKind;
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use std::ops::Deref;

#[derive(Clone, Copy, Debug)]
pub struct GdOptions {
    /// Step η > 0.
    pub lr: f64,
    /// Number of steps E; the loss is reported at epochs 0..=E.
    pub epochs: usize,
    pub loss: LossKind,
    /// Track kink crossings (costs one pass over the pre-activations per epoch).
    pub track_kinks: bool,
    /// The float type of θ and the gradient during training. The dnn, resnet and gcn presets
    /// train on the compiled engine ([`crate::engine`]) in either precision; other models use
    /// the general path and support only f64.
    pub precision: Precision,
}

/// What is known at epoch k, before the step is taken.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct EpochRecord {
    pub epoch: usize,
    /// Gradient-flow time t = kη.
    pub t: f64,
    pub loss: f64,
    /// ‖∇L(θ_k)‖₂.
    pub grad_norm: f64,
    pub kinks: KinkStep,
}

/// θ_k as the observer sees it, in f64 (it derefs to `[f64]`): θ itself when training runs in
/// f64; when it runs in f32, θ converted on first use and kept for the rest of the call. Most
/// epochs' observers never look at θ (it is wanted at NTK checkpoints and when saving), and
/// converting every epoch cost ≈ 0.09 ms of a 5 ms f32 ResNet epoch.
pub struct ThetaView<'a> {
    source: ViewSource<'a>,
    converted: OnceCell<Vec<f64>>,
}

enum ViewSource<'a> {
    Ready(&'a [f64]),
    Lazy(&'a dyn Fn() -> Vec<f64>),
}

impl<'a> ThetaView<'a> {
    /// A view of an f64 θ.
    pub fn of(theta: &'a [f64]) -> Self {
        Self {
            source: ViewSource::Ready(theta),
            converted: OnceCell::new(),
        }
    }

    /// A view that calls `convert` (θ in f64) the first time it is read.
    pub fn lazy(convert: &'a dyn Fn() -> Vec<f64>) -> Self {
        Self {
            source: ViewSource::Lazy(convert),
            converted: OnceCell::new(),
        }
    }

    pub fn as_slice(&self) -> &[f64] {
        match self.source {
            ViewSource::Ready(theta) => theta,
            ViewSource::Lazy(convert) => self.converted.get_or_init(convert),
        }
    }
}

impl Deref for ThetaView<'_> {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        self.as_slice()
    }
}

/// What the observer tells the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    /// End the run after this record, without taking the step.
    Stop,
    /// End the run after taking this step, resumable (see [`gradient_descent_from`]).
    Pause,
}

#[derive(Clone, Debug, Serialize)]
pub struct GdOutcome {
    /// The last epoch reached (E, or earlier when the observer stopped the loop).
    pub last_epoch: usize,
    pub stopped_early: bool,
    /// Stopped by [`Control::Pause`]: θ and the state are at `last_epoch + 1`.
    pub paused: bool,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub gradient_evaluations: u64,
    pub kinks: KinkSummary,
}

/// Runs GD from θ (updated in place). `observe(record, θ_k)` ([`ThetaView`]) is called at every epoch
/// k = 0..=E before the step; returning `Control::Stop` ends the run after that record.
pub fn gradient_descent(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    gradient_descent_from(model, data, theta, opts, &mut GdState::default(), observe)
}

/// Everything GD carries from one epoch to the next besides θ: enough to continue a paused run
/// so that it produces bit-identical results to one that never stopped.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GdState {
    /// The next epoch to evaluate (θ passed in is θ_epoch).
    pub epoch: usize,
    pub initial_loss: Option<f64>,
    pub tracker: KinkTracker,
}

/// [`gradient_descent`] from a saved state: evaluates epochs `state.epoch..=E`. When the observer
/// answers [`Control::Pause`] at epoch k, the step k → k+1 is still taken and `state` is left at
/// k + 1, so calling this again with the same θ and state continues exactly.
pub fn gradient_descent_from(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    state: &mut GdState,
    mut observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        return Err(Error::Invalid(format!(
            "the step lr = {} must be positive and finite",
            opts.lr
        )));
    }
    if let Some(outcome) =
        crate::engine::gradient_descent_engine(model, data, theta, opts, state, &mut observe)?
    {
        return Ok(outcome);
    }
    gradient_descent_general(model, data, theta, opts, state, observe)
}

/// [`gradient_descent_from`] on the general path (any model, f64 only), whatever the model.
pub fn gradient_descent_general(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    state: &mut GdState,
    mut observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    if opts.precision != Precision::F64 {
        return Err(Error::Invalid(format!(
            "train.precision = \"{}\" needs the compiled engine (presets {}); the general path trains in f64",
            opts.precision.name(),
            crate::engine::ENGINE_PRESETS.join(", ")
        )));
    }
    let mut grad = vec![0.0; theta.len()];
    let start = state.epoch;
    for k in start..=opts.epochs {
        let (loss, ev) = model.loss_and_grad(theta, &data.x, &data.y, opts.loss, &mut grad);
        let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            let place = model
                .diagnose_non_finite(theta, &data.x, &grad)
                .map_or(String::new(), |p| format!(" At epoch {k}, {p}."));
            return Err(Error::Diverged(format!(
                "training diverged at epoch {k} (t = {}): the loss is {loss:e}, the gradient norm {grad_norm:e}.{place} \
                 The step lr = {} exceeds gradient descent's stability limit (about 2 / λ_max of the \
                 loss Hessian); lower `train.lr`",
                k as f64 * opts.lr,
                opts.lr
            )));
        }
        let initial_loss = *state.initial_loss.get_or_insert(loss);
        let kinks = if opts.track_kinks {
            state.tracker.observe(model, &data.x, &ev)
        } else {
            KinkStep::default()
        };
        let record = EpochRecord {
            epoch: k,
            t: k as f64 * opts.lr,
            loss,
            grad_norm,
            kinks,
        };
        let control = observe(&record, &ThetaView::of(theta));
        let pause = control == Control::Pause && k < opts.epochs;
        if pause {
            for (t, g) in theta.iter_mut().zip(&grad) {
                *t -= opts.lr * g;
            }
        }
        if k == opts.epochs || control != Control::Continue {
            state.epoch = if pause { k + 1 } else { k };
            return Ok(GdOutcome {
                last_epoch: k,
                stopped_early: k < opts.epochs,
                paused: pause,
                initial_loss,
                final_loss: loss,
                gradient_evaluations: (k + 1 - start) as u64,
                kinks: state.tracker.summary(),
            });
        }
        for (t, g) in theta.iter_mut().zip(&grad) {
            *t -= opts.lr * g;
        }
    }
    Err(Error::Invalid(format!(
        "nothing to do: the run is already at epoch {start} of {}",
        opts.epochs
    )))
}
