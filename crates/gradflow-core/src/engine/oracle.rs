//! The engine as the GD loop's gradient oracle ([`EngineOracle`], implementing
//! [`crate::oracle::GradientOracle`]): θ and the gradient kept in the training precision, the
//! pieces of σ handed to the kink tracker as bits (σ with one kink) or indices. In f32 the
//! observer (NTK checkpoints, saving) sees θ converted to f64 when it reads it ([`ThetaView`]),
//! and the caller's θ is written back in f64 when the loop ends; f32 → f64 → f32 is exact, so a
//! paused f32 run resumes bit-identically. Also [`engine_for`] (the engine for a model, checked
//! against the layer path's outputs) and the GD [`step`].

use super::{convert, Engine, Layout, Parts, Plan, Real};
use crate::config::Precision;
use crate::data::Dataset;
use crate::kinks::{KinkStep, KinkTracker};
use crate::loss::LossKind;
use crate::model::Model;
use crate::oracle::{GradientOracle, ThetaView};

/// The engine for `model` on `data`, its samples cut for the current rayon pool
/// ([`Parts::for_pool`]), or None when the model is not one the engine compiles (or its outputs
/// at θ do not match the layer path's: e.g. a GCN built on another graph than `data.graph`).
pub fn engine_for<T: Real>(
    model: &Model,
    data: &Dataset,
    loss: LossKind,
    theta: &[f64],
) -> Option<Engine<T>> {
    engine_in_parts(model, data, loss, theta, Parts::for_pool())
}

/// [`engine_for`] with the samples cut into the given parts.
pub fn engine_in_parts<T: Real>(
    model: &Model,
    data: &Dataset,
    loss: LossKind,
    theta: &[f64],
    parts: Parts,
) -> Option<Engine<T>> {
    let plan = Plan::from_model(model)?;
    let a_hat = match plan.arch {
        super::plan::Arch::Gcn => Some(data.graph.as_ref()?.normalized_adjacency()),
        _ => None,
    };
    if data.n() == 0 || theta.len() != plan.num_params() {
        return None;
    }
    let layout = Layout::preferred(&plan);
    let (x, y) = (&data.x, &data.y);
    let a_hat = a_hat.as_ref();
    let mut engine =
        Engine::<T>::with_parts(plan, &model.activation, x, y, loss, a_hat, layout, parts);
    // One check at the start: the compiled network computes the model's outputs.
    let reference = model.outputs(theta, &data.x);
    engine.forward(&convert::<T>(theta));
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (a, b) in engine.outputs().zip(reference.as_slice()) {
        diff += (a.to_f64() - b).powi(2);
        norm += b * b;
    }
    let tol = match T::PRECISION {
        Precision::F64 => 1e-10,
        Precision::F32 => 1e-3,
    };
    (diff.is_finite() && diff.sqrt() <= tol * (1.0 + norm.sqrt())).then_some(engine)
}

/// GD on the engine: θ in `T`, copied from the caller's f64 θ and written back to it.
pub struct EngineOracle<'a, T: Real> {
    engine: Engine<T>,
    model: &'a Model,
    data: &'a Dataset,
    /// The caller's θ, written by [`GradientOracle::write_back`].
    caller_theta: &'a mut [f64],
    theta: Vec<T>,
    grad: Vec<T>,
    /// The engine's blocks of pre-activations ([`Engine::piece_segments`]), for bit tracking.
    segments: Vec<usize>,
}

impl<'a, T: Real> EngineOracle<'a, T> {
    /// GD from θ on `engine` (built for `model` and `data`, e.g. by [`engine_for`]).
    pub fn new(
        engine: Engine<T>,
        model: &'a Model,
        data: &'a Dataset,
        theta: &'a mut [f64],
    ) -> Self {
        Self {
            theta: convert(theta),
            grad: vec![T::default(); theta.len()],
            segments: engine.piece_segments(),
            engine,
            model,
            data,
            caller_theta: theta,
        }
    }
}

impl<T: Real> GradientOracle for EngineOracle<'_, T> {
    fn track_kinks(&mut self, on: bool) {
        self.engine.set_record_pieces(on);
    }

    fn loss_and_grad(&mut self) -> (f64, f64) {
        let loss = self.engine.loss_and_grad(&self.theta, &mut self.grad);
        (loss, self.engine.grad_norm())
    }

    fn observe_kinks(&mut self, tracker: &mut KinkTracker) -> KinkStep {
        let engine = &self.engine;
        if engine.single_kink().is_some() {
            tracker.observe_bits(&self.segments, |layout, words| {
                engine.piece_bits(layout, words)
            })
        } else {
            tracker.observe_pieces(|cur| engine.pieces(cur))
        }
    }

    fn theta_view(&self) -> ThetaView<'_> {
        T::view(&self.theta)
    }

    fn step(&mut self, lr: f64) {
        step(&mut self.theta, &self.grad, T::from_f64(lr));
    }

    fn write_back(&mut self) {
        for (d, &s) in self.caller_theta.iter_mut().zip(&self.theta) {
            *d = s.to_f64();
        }
    }

    fn diagnose_non_finite(&self) -> Option<String> {
        let grad: Vec<f64> = self.grad.iter().map(|g| g.to_f64()).collect();
        self.model
            .diagnose_non_finite(self.caller_theta, &self.data.x, &grad)
    }
}

/// One GD step as the training loop takes it: θ −= lr·g, θ cut into one range per thread of the
/// rayon pool, the ranges stepped in parallel (element-wise: the result does not depend on the
/// cut).
pub fn step<T: Real>(theta: &mut [T], grad: &[T], lr: T) {
    step_in_ranges(theta, grad, lr, rayon::current_num_threads());
}

fn step_in_ranges<T: Real>(theta: &mut [T], grad: &[T], lr: T, ranges: usize) {
    use super::kernels::{both, step_into};
    if ranges <= 1 {
        return step_into(theta, grad, lr);
    }
    let left = ranges / 2;
    let mid = theta.len() * left / ranges;
    let (t0, t1) = theta.split_at_mut(mid);
    let (g0, g1) = grad.split_at(mid);
    both(
        || step_in_ranges(t0, g0, lr, left),
        || step_in_ranges(t1, g1, lr, ranges - left),
    );
}
