//! Full-batch gradient descent θ_{k+1} = θ_k − η ∇L(θ_k): explicit Euler on the gradient flow,
//! step k standing for flow time t = kη (the paper's simulation). The loop reports every epoch
//! to an observer (metrics, NTK checkpoints, progress, interruption) and stops with a clear
//! message when the loss stops being finite.

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kinks::{KinkStep, KinkSummary, KinkTracker};
use crate::loss::LossKind;
use crate::model::Model;
use serde::Serialize;

#[derive(Clone, Copy, Debug)]
pub struct GdOptions {
    /// Step η > 0.
    pub lr: f64,
    /// Number of steps E; the loss is reported at epochs 0..=E.
    pub epochs: usize,
    pub loss: LossKind,
    /// Track kink crossings (costs one pass over the pre-activations per epoch).
    pub track_kinks: bool,
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

/// What the observer tells the loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

#[derive(Clone, Debug, Serialize)]
pub struct GdOutcome {
    /// The last epoch reached (E, or earlier when the observer stopped the loop).
    pub last_epoch: usize,
    pub stopped_early: bool,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub gradient_evaluations: u64,
    pub kinks: KinkSummary,
}

/// Runs GD from θ (updated in place). `observe(record, θ_k)` is called at every epoch
/// k = 0..=E before the step; returning `Control::Stop` ends the run after that record.
pub fn gradient_descent(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    mut observe: impl FnMut(&EpochRecord, &[f64]) -> Control,
) -> Result<GdOutcome> {
    if !(opts.lr > 0.0 && opts.lr.is_finite()) {
        return Err(Error::Invalid(format!(
            "the step lr = {} must be positive and finite",
            opts.lr
        )));
    }
    let mut grad = vec![0.0; theta.len()];
    let mut tracker = KinkTracker::new();
    let mut initial_loss = f64::NAN;
    let mut outcome = None;
    for k in 0..=opts.epochs {
        let (loss, ev) = model.loss_and_grad(theta, &data.x, &data.y, opts.loss, &mut grad);
        let grad_norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        if !loss.is_finite() || !grad_norm.is_finite() {
            return Err(Error::Diverged(format!(
                "training diverged at epoch {k} (t = {}): the loss is {loss}, the gradient norm {grad_norm}. \
                 The step lr = {} exceeds gradient descent's stability limit (about 2 / λ_max of the \
                 loss Hessian); lower `train.lr`",
                k as f64 * opts.lr,
                opts.lr
            )));
        }
        if k == 0 {
            initial_loss = loss;
        }
        let kinks = if opts.track_kinks {
            tracker.observe(model, &data.x, &ev)
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
        let control = observe(&record, theta);
        if k == opts.epochs || control == Control::Stop {
            outcome = Some(GdOutcome {
                last_epoch: k,
                stopped_early: k < opts.epochs,
                initial_loss,
                final_loss: loss,
                gradient_evaluations: k as u64 + 1,
                kinks: tracker.summary(),
            });
            break;
        }
        for (t, g) in theta.iter_mut().zip(&grad) {
            *t -= opts.lr * g;
        }
    }
    Ok(outcome.expect("the loop runs at least once"))
}
