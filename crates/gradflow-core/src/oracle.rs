//! What the gradient-descent loop ([`crate::train`]) needs from whatever evaluates the loss and
//! its gradient: the [`GradientOracle`] trait, the view of θ handed to observers
//! ([`ThetaView`]), and the layer path's oracle ([`LayerOracle`], any model, f64).
//!
//! Two evaluators implement it: the layer path here (boxed layers, [`Model::loss_and_grad`])
//! and the compiled engine ([`crate::engine::EngineOracle`], the dnn, resnet and gcn presets,
//! f32 or f64). The loop owns everything the evaluators share — records, observers, the kink
//! tracker's state, pause and resume, the divergence message — so it exists once; an oracle owns
//! θ in its own float type and the gradient of its last evaluation. This module depends on
//! neither the loop nor the engine: both depend on it.

use crate::data::Dataset;
use crate::kinks::{KinkStep, KinkTracker};
use crate::loss::LossKind;
use crate::model::{Evaluation, Model};
use std::cell::OnceCell;
use std::ops::Deref;

/// A loss-gradient evaluator holding θ, as the GD loop drives it. Per epoch the loop calls
/// [`Self::loss_and_grad`], then (kink tracking on) [`Self::observe_kinks`], hands
/// [`Self::theta_view`] to its observer, and takes [`Self::step`]; when it ends it calls
/// [`Self::write_back`].
pub trait GradientOracle {
    /// Whether the loop will ask for the pieces every epoch ([`Self::observe_kinks`]); called
    /// once before the first evaluation. An oracle may prepare for it (the engine then records
    /// the pieces' bits during its forward pass).
    fn track_kinks(&mut self, _on: bool) {}

    /// Evaluates L(θ) and ∇L(θ) at the current θ, keeping the gradient for [`Self::step`];
    /// returns (L, ‖∇L‖₂), both in f64.
    fn loss_and_grad(&mut self) -> (f64, f64);

    /// Feeds the pieces of σ of the last evaluation's pre-activations to `tracker` and returns
    /// the changes since its previous observation.
    fn observe_kinks(&mut self, tracker: &mut KinkTracker) -> KinkStep;

    /// θ as observers see it, in f64.
    fn theta_view(&self) -> ThetaView<'_>;

    /// θ −= lr·∇L, with the gradient of the last evaluation.
    fn step(&mut self, lr: f64);

    /// Writes θ into the caller's f64 θ (a no-op for an oracle that updates it in place).
    fn write_back(&mut self);

    /// After an evaluation that was not finite, and [`Self::write_back`]: where it first went
    /// wrong (a parameter tensor, or the layer whose outputs overflowed), if that can be told.
    fn diagnose_non_finite(&self) -> Option<String>;
}

/// The layer path: [`Model::loss_and_grad`] on any model, in f64, θ updated in place.
pub struct LayerOracle<'a> {
    model: &'a Model,
    data: &'a Dataset,
    loss: LossKind,
    theta: &'a mut [f64],
    grad: Vec<f64>,
    /// The last evaluation's forward pass (its pre-activations, for the kink tracker).
    evaluation: Option<Evaluation>,
}

impl<'a> LayerOracle<'a> {
    pub fn new(model: &'a Model, data: &'a Dataset, loss: LossKind, theta: &'a mut [f64]) -> Self {
        Self {
            grad: vec![0.0; theta.len()],
            model,
            data,
            loss,
            theta,
            evaluation: None,
        }
    }
}

impl GradientOracle for LayerOracle<'_> {
    fn loss_and_grad(&mut self) -> (f64, f64) {
        // The previous forward pass goes before the next one is made (one tape at a time).
        self.evaluation = None;
        let (x, y) = (&self.data.x, &self.data.y);
        let (loss, ev) = self
            .model
            .loss_and_grad(self.theta, x, y, self.loss, &mut self.grad);
        self.evaluation = Some(ev);
        let grad_norm = self.grad.iter().map(|g| g * g).sum::<f64>().sqrt();
        (loss, grad_norm)
    }

    fn observe_kinks(&mut self, tracker: &mut KinkTracker) -> KinkStep {
        let ev = self
            .evaluation
            .as_ref()
            .expect("observe_kinks: no evaluation yet");
        tracker.observe(self.model, &self.data.x, ev)
    }

    fn theta_view(&self) -> ThetaView<'_> {
        ThetaView::of(self.theta)
    }

    fn step(&mut self, lr: f64) {
        for (t, g) in self.theta.iter_mut().zip(&self.grad) {
            *t -= lr * g;
        }
    }

    fn write_back(&mut self) {}

    fn diagnose_non_finite(&self) -> Option<String> {
        self.model
            .diagnose_non_finite(self.theta, &self.data.x, &self.grad)
    }
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
    Narrow(&'a [f32]),
}

impl<'a> ThetaView<'a> {
    /// A view of an f64 θ.
    pub fn of(theta: &'a [f64]) -> Self {
        Self {
            source: ViewSource::Ready(theta),
            converted: OnceCell::new(),
        }
    }

    /// A view of an f32 θ, converted to f64 the first time it is read.
    pub fn of_f32(theta: &'a [f32]) -> Self {
        Self {
            source: ViewSource::Narrow(theta),
            converted: OnceCell::new(),
        }
    }

    pub fn as_slice(&self) -> &[f64] {
        match self.source {
            ViewSource::Ready(theta) => theta,
            ViewSource::Narrow(theta) => self
                .converted
                .get_or_init(|| theta.iter().map(|&v| v as f64).collect()),
        }
    }
}

impl Deref for ThetaView<'_> {
    type Target = [f64];
    fn deref(&self) -> &[f64] {
        self.as_slice()
    }
}
