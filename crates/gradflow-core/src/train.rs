//! Full-batch gradient descent θ_{k+1} = θ_k − η ∇L(θ_k): explicit Euler on the gradient flow,
//! step k standing for flow time t = kη (the paper's simulation). The loop reports every epoch
//! to an observer (metrics, NTK checkpoints, progress, interruption), can pause and resume
//! bit-identically, and stops with a clear message when the loss stops being finite.
//!
//! There is one loop, [`gradient_descent_on`], over a [`GradientOracle`] (the evaluator of L
//! and ∇L that holds θ, [`crate::oracle`]). The caller picks the oracle: [`gradient_descent`]
//! and [`gradient_descent_from`] ask [`oracle_for`], which takes the compiled engine for the
//! presets that have one ([`Preset::has_engine`]) and the layer path otherwise;
//! [`gradient_descent_general`] always takes the layer path.

pub use crate::config::Precision;
use crate::config::Preset;
use crate::data::Dataset;
use crate::engine::{engine_for, EngineOracle};
use crate::error::{Error, Result};
use crate::kinks::{KinkStep, KinkSummary, KinkTracker};
use crate::loss::LossKind;
use crate::model::Model;
pub use crate::oracle::{GradientOracle, LayerOracle, ThetaView};
use serde::{Deserialize, Serialize};

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
///
/// ```
/// use gradflow_core::activation::Activation;
/// use gradflow_core::config::Precision;
/// use gradflow_core::data::Dataset;
/// use gradflow_core::init::{init_params, InitScheme};
/// use gradflow_core::loss::LossKind;
/// use gradflow_core::presets::dnn;
/// use gradflow_core::train::{gradient_descent, Control, GdOptions};
///
/// let data = Dataset::ball(10, 3, 1, 0);
/// let model = dnn(3, &[32], 1, &Activation::LeakyRelu { slope: 0.01 });
/// let mut theta = init_params(&model.param_specs(), &InitScheme::Torch, 0);
/// let opts = GdOptions {
///     lr: 0.05,
///     epochs: 200,
///     loss: LossKind::Mse,
///     track_kinks: false,
///     precision: Precision::F64,
/// };
/// let mut losses = Vec::new();
/// let out = gradient_descent(&model, &data, &mut theta, &opts, |rec, _theta| {
///     losses.push(rec.loss);
///     Control::Continue
/// })?;
/// assert_eq!(losses.len(), 201); // epochs 0..=E
/// assert!(out.final_loss < 0.5 * out.initial_loss);
/// # Ok::<(), gradflow_core::Error>(())
/// ```
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
    observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    // Before the oracle is picked (and the engine built): an invalid step is reported first.
    check_step(opts.lr)?;
    let mut oracle = oracle_for(model, data, theta, opts)?;
    gradient_descent_on(oracle.as_mut(), opts, state, observe)
}

/// [`gradient_descent_from`] on the layer path (any model, f64 only), whatever the model.
pub fn gradient_descent_general(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    state: &mut GdState,
    observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    if opts.precision != Precision::F64 {
        return Err(Error::Invalid(format!(
            "train.precision = \"{}\" needs the compiled engine (presets {}); the general path trains in f64",
            opts.precision.name(),
            Preset::engine_names()
        )));
    }
    let mut oracle = LayerOracle::new(model, data, opts.loss, theta);
    gradient_descent_on(&mut oracle, opts, state, observe)
}

/// The oracle GD runs on for `model` from θ (which it holds until it is dropped): the compiled
/// engine in `opts.precision` when the model's preset has one and the engine compiles this model
/// (it may not: a GCN built on another graph than `data.graph`), else the layer path — which
/// trains in f64 only, so f32 is then an error.
pub fn oracle_for<'a>(
    model: &'a Model,
    data: &'a Dataset,
    theta: &'a mut [f64],
    opts: &GdOptions,
) -> Result<Box<dyn GradientOracle + 'a>> {
    let has_engine = model.preset.is_some_and(|p| p.has_engine());
    match opts.precision {
        Precision::F64 => {
            if let Some(engine) = has_engine
                .then(|| engine_for::<f64>(model, data, opts.loss, theta))
                .flatten()
            {
                return Ok(Box::new(EngineOracle::new(engine, model, data, theta)));
            }
            Ok(Box::new(LayerOracle::new(model, data, opts.loss, theta)))
        }
        Precision::F32 => match has_engine
            .then(|| engine_for::<f32>(model, data, opts.loss, theta))
            .flatten()
        {
            Some(engine) => Ok(Box::new(EngineOracle::new(engine, model, data, theta))),
            None => Err(Error::Invalid(format!(
                "train.precision = \"f32\" is available only for the presets {} (trained by the \
                 compiled engine); this model (preset `{}`) trains in f64: set train.precision = \"f64\"",
                Preset::engine_names(),
                model.preset_name()
            ))),
        },
    }
}

/// The step must be positive and finite.
fn check_step(lr: f64) -> Result<()> {
    if lr > 0.0 && lr.is_finite() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "the step lr = {lr} must be positive and finite"
        )))
    }
}

/// The GD loop on `oracle` (which holds θ_{state.epoch}), from a saved state as
/// [`gradient_descent_from`]: evaluates epochs `state.epoch..=E`, calling `observe` at each
/// before the step, and leaves θ in the oracle's caller-side θ ([`GradientOracle::write_back`])
/// when it ends, also on divergence.
pub fn gradient_descent_on<O: GradientOracle + ?Sized>(
    oracle: &mut O,
    opts: &GdOptions,
    state: &mut GdState,
    mut observe: impl FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    check_step(opts.lr)?;
    oracle.track_kinks(opts.track_kinks);
    let start = state.epoch;
    for k in start..=opts.epochs {
        let (loss, grad_norm) = oracle.loss_and_grad();
        if !loss.is_finite() || !grad_norm.is_finite() {
            oracle.write_back();
            let place = oracle
                .diagnose_non_finite()
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
            oracle.observe_kinks(&mut state.tracker)
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
        let control = observe(&record, &oracle.theta_view());
        let pause = control == Control::Pause && k < opts.epochs;
        if pause {
            oracle.step(opts.lr);
        }
        if k == opts.epochs || control != Control::Continue {
            state.epoch = if pause { k + 1 } else { k };
            oracle.write_back();
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
        oracle.step(opts.lr);
    }
    Err(Error::Invalid(format!(
        "nothing to do: the run is already at epoch {start} of {}",
        opts.epochs
    )))
}
