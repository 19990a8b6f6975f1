//! Full-batch gradient descent on the engine: the same loop, records, observer protocol,
//! pause/resume semantics and divergence message as [`crate::train::gradient_descent_from`], with
//! θ and the gradient kept in the training precision. In f32 the observer (NTK checkpoints,
//! saving) sees θ converted to f64 when it reads it ([`ThetaView`]), and the caller's θ is
//! written back in f64 when the loop ends; f32 → f64 → f32 is exact, so a paused f32 run
//! resumes bit-identically.

use super::{convert, Engine, Plan, Real};
use crate::config::Precision;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::kinks::KinkStep;
use crate::model::Model;
use crate::train::{Control, EpochRecord, GdOptions, GdOutcome, GdState, ThetaView};

/// The presets the engine trains (and hence the only ones `precision = "f32"` supports).
pub const ENGINE_PRESETS: [&str; 3] = ["dnn", "resnet", "gcn"];

/// The engine for `model` on `data`, or None when the model is not one the engine compiles (or
/// its outputs at θ do not match the general path's: e.g. a GCN built on another graph than
/// `data.graph`).
pub fn engine_for<T: Real>(
    model: &Model,
    data: &Dataset,
    loss: crate::loss::LossKind,
    theta: &[f64],
) -> Option<Engine<T>> {
    let plan = Plan::from_model(model)?;
    let a_hat = match plan.arch {
        super::plan::Arch::Gcn => Some(data.graph.as_ref()?.normalized_adjacency()),
        _ => None,
    };
    if data.n() == 0 || theta.len() != plan.num_params() {
        return None;
    }
    let mut engine = Engine::<T>::new(
        plan,
        &model.activation,
        &data.x,
        &data.y,
        loss,
        a_hat.as_ref(),
    );
    // One check at the start: the compiled network computes the model's outputs.
    let reference = model.outputs(theta, &data.x);
    engine.forward(&convert::<T>(theta));
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in engine.outputs().zip(reference.as_slice()) {
        diff += (a.to_f64() - b).powi(2);
        norm += b * b;
    }
    let tol = if T::NAME == "f64" { 1e-10 } else { 1e-3 };
    (diff.is_finite() && diff.sqrt() <= tol * (1.0 + norm.sqrt())).then_some(engine)
}

/// Runs GD on the engine when `model` is one it compiles, in `opts.precision`; Ok(None) when it
/// is not (the caller uses the general path, which only trains in f64).
pub fn gradient_descent_engine(
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    state: &mut GdState,
    observe: &mut dyn FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<Option<GdOutcome>> {
    match opts.precision {
        Precision::F64 => match engine_for::<f64>(model, data, opts.loss, theta) {
            Some(e) => run(e, model, data, theta, opts, state, observe).map(Some),
            None => Ok(None),
        },
        Precision::F32 => match engine_for::<f32>(model, data, opts.loss, theta) {
            Some(e) => run(e, model, data, theta, opts, state, observe).map(Some),
            None => Err(Error::Invalid(format!(
                "train.precision = \"f32\" is available only for the presets {} (trained by the \
                 compiled engine); this model (preset `{}`) trains in f64: set train.precision = \"f64\"",
                ENGINE_PRESETS.join(", "),
                model.preset_name()
            ))),
        },
    }
}

fn run<T: Real>(
    mut engine: Engine<T>,
    model: &Model,
    data: &Dataset,
    theta: &mut [f64],
    opts: &GdOptions,
    state: &mut GdState,
    observe: &mut dyn FnMut(&EpochRecord, &ThetaView<'_>) -> Control,
) -> Result<GdOutcome> {
    let p = theta.len();
    let mut th: Vec<T> = convert(theta);
    let mut grad = vec![T::default(); p];
    let lr = T::from_f64(opts.lr);
    let segments = engine.piece_segments();
    engine.set_record_pieces(opts.track_kinks);
    let start = state.epoch;
    let write_back = |th: &[T], theta: &mut [f64]| {
        for (d, &s) in theta.iter_mut().zip(th) {
            *d = s.to_f64();
        }
    };
    for k in start..=opts.epochs {
        let loss = engine.loss_and_grad(&th, &mut grad);
        let grad_norm = engine.grad_norm();
        if !loss.is_finite() || !grad_norm.is_finite() {
            write_back(&th, theta);
            let g64: Vec<f64> = grad.iter().map(|g| g.to_f64()).collect();
            let place = model
                .diagnose_non_finite(theta, &data.x, &g64)
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
        let kinks = if !opts.track_kinks {
            KinkStep::default()
        } else if engine.single_kink().is_some() {
            state
                .tracker
                .observe_bits(&segments, |layout, words| engine.piece_bits(layout, words))
        } else {
            state.tracker.observe_pieces(|cur| engine.pieces(cur))
        };
        let record = EpochRecord {
            epoch: k,
            t: k as f64 * opts.lr,
            loss,
            grad_norm,
            kinks,
        };
        let control = {
            // In f32, θ_k is converted to f64 only if the observer reads it.
            let convert = || th.iter().map(|v| v.to_f64()).collect();
            let view = match T::as_f64_slice(&th) {
                Some(theta) => ThetaView::of(theta),
                None => ThetaView::lazy(&convert),
            };
            observe(&record, &view)
        };
        let pause = control == Control::Pause && k < opts.epochs;
        if pause {
            step(&mut th, &grad, lr);
        }
        if k == opts.epochs || control != Control::Continue {
            state.epoch = if pause { k + 1 } else { k };
            write_back(&th, theta);
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
        step(&mut th, &grad, lr);
    }
    Err(Error::Invalid(format!(
        "nothing to do: the run is already at epoch {start} of {}",
        opts.epochs
    )))
}

/// One GD step as the training loop takes it: θ −= lr·g, both halves of θ at once.
pub fn step<T: Real>(th: &mut [T], grad: &[T], lr: T) {
    use super::kernels::{both, step_into};
    let mid = th.len() / 2;
    let (t0, t1) = th.split_at_mut(mid);
    let (g0, g1) = grad.split_at(mid);
    both(|| step_into(t0, g0, lr), || step_into(t1, g1, lr));
}
