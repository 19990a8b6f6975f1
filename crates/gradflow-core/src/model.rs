//! A model: one network (a [`Layer`], usually a composite) over one flat parameter vector θ ∈ R^p,
//! with the operations the theory needs — outputs u(θ), the loss and its gradient (one vjp),
//! Jacobian–vector products J v (one jvp) and Jᵀ w (one vjp), and the named tensors of θ
//! ([`Model::param_index`]).

use crate::activation::Activation;
use crate::batch::Batch;
use crate::config::Preset;
use crate::layers::{Layer, ParamSpec, PreActivation, Tape};
use crate::loss::LossKind;
use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Model {
    /// The network f(θ, ·).
    pub net: Box<dyn Layer>,
    /// The preset it was built from; None for a network assembled by hand.
    pub preset: Option<Preset>,
    /// The activation σ used throughout (for the theorem's hypothesis).
    pub activation: Activation,
    /// Names of θ's tensors replacing the network's own, in order (a layer list names them
    /// after its entries, e.g. `layers.0.weight`; see [`crate::spec`]). None: the network's.
    param_names: Option<Vec<String>>,
}

/// A forward pass kept for the reverse and forward modes.
pub struct Evaluation {
    pub outputs: Batch,
    tape: Tape,
}

impl Model {
    /// A model of network `net` built by `preset` (a [`Preset`], or None for a network assembled
    /// by hand).
    pub fn new(
        net: Box<dyn Layer>,
        preset: impl Into<Option<Preset>>,
        activation: Activation,
    ) -> Self {
        Self {
            net,
            preset: preset.into(),
            activation,
            param_names: None,
        }
    }
    /// The model with its tensors named `names` (one per entry of the network's
    /// [`Layer::param_specs`], in order).
    ///
    /// Panics when the count differs (a model-builder error).
    pub fn with_param_names(mut self, names: Vec<String>) -> Self {
        assert_eq!(
            names.len(),
            self.net.param_specs().len(),
            "with_param_names: one name per parameter tensor"
        );
        self.param_names = Some(names);
        self
    }
    /// The preset's name, `custom` for a network assembled by hand (as printed and saved).
    pub fn preset_name(&self) -> &'static str {
        self.preset.map_or("custom", |p| p.name())
    }
    /// p, the number of parameters.
    pub fn p(&self) -> usize {
        self.net.num_params()
    }
    pub fn in_dim(&self) -> usize {
        self.net.in_dim()
    }
    pub fn out_dim(&self) -> usize {
        self.net.out_dim()
    }
    /// The named tensors of θ, in order (shapes row-major, PyTorch's layouts).
    pub fn param_specs(&self) -> Vec<ParamSpec> {
        let mut specs = self.net.param_specs();
        if let Some(names) = &self.param_names {
            for (s, n) in specs.iter_mut().zip(names) {
                s.name.clone_from(n);
            }
        }
        specs
    }
    /// Every tensor of θ by name: (shape, offset in θ). θ[offset .. offset + Π shape] holds
    /// the tensor row-major, so a caller can read or write parameters by name.
    pub fn param_index(&self) -> BTreeMap<String, (Vec<usize>, usize)> {
        let mut at = 0;
        let mut index = BTreeMap::new();
        for s in self.param_specs() {
            let len = s.len();
            index.insert(s.name, (s.shape, at));
            at += len;
        }
        index
    }

    pub fn evaluate(&self, theta: &[f64], x: &Batch) -> Evaluation {
        debug_assert_eq!(theta.len(), self.p());
        let (outputs, tape) = self.net.forward(theta, x);
        Evaluation { outputs, tape }
    }
    /// u(θ) as an (m × n) batch, i.e. the vector u of docs/theory.md ('Conventions') in order
    /// i·m + a.
    pub fn outputs(&self, theta: &[f64], x: &Batch) -> Batch {
        self.evaluate(theta, x).outputs
    }

    /// Jᵀ w: the parameter cotangent of an output cotangent w (m × n), added into `grad`;
    /// also returns the input cotangent.
    pub fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        ev: &Evaluation,
        w: &Batch,
        grad: &mut [f64],
    ) -> Batch {
        self.net.vjp(theta, x, &ev.tape, w, grad)
    }
    /// J v: the output tangent of a parameter tangent v (inputs held fixed).
    pub fn jvp(&self, theta: &[f64], x: &Batch, ev: &Evaluation, v: &[f64]) -> Batch {
        let zero = Batch::zeros(x.features(), x.n());
        self.net.jvp(theta, x, &ev.tape, &zero, v)
    }

    /// The NTK's reverse pass (see [`Layer::vjp_gram`]): adds the per-column parameter Gram of
    /// output cotangents `y_bar` (m × n·reps) into `gram`.
    pub fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        ev: &Evaluation,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        self.net.vjp_gram(theta, x, &ev.tape, y_bar, reps, gram)
    }

    /// L(θ) and ∇L(θ) (written into `grad`, overwritten), plus the evaluation for diagnostics.
    pub fn loss_and_grad(
        &self,
        theta: &[f64],
        x: &Batch,
        y: &Batch,
        loss: LossKind,
        grad: &mut [f64],
    ) -> (f64, Evaluation) {
        let ev = self.evaluate(theta, x);
        let (l, cot) = loss.value_and_cotangent(&ev.outputs, y);
        grad.iter_mut().for_each(|g| *g = 0.0);
        self.vjp(theta, x, &ev, &cot, grad);
        (l, ev)
    }

    pub fn loss(&self, theta: &[f64], x: &Batch, y: &Batch, loss: LossKind) -> f64 {
        loss.value(&self.outputs(theta, x), y)
    }

    /// Calls `visit` with every pre-activation batch of the evaluated network.
    pub fn visit_pre_activations(
        &self,
        x: &Batch,
        ev: &Evaluation,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        self.net.visit_pre_activations(x, &ev.tape, visit);
    }

    /// Where a non-finite value first appears at θ on inputs x with gradient `grad`: a parameter
    /// tensor, a layer's forward output, or a parameter tensor's gradient (the backward pass),
    /// named as in the saved tensors. None when all are finite.
    pub fn diagnose_non_finite(&self, theta: &[f64], x: &Batch, grad: &[f64]) -> Option<String> {
        let specs = self.param_specs();
        let tensor_with = |v: &[f64]| {
            let mut at = 0;
            for s in &specs {
                if v[at..at + s.len()].iter().any(|z| !z.is_finite()) {
                    return Some(s.name.clone());
                }
                at += s.len();
            }
            None
        };
        if let Some(name) = tensor_with(theta) {
            return Some(format!(
                "parameter tensor `{name}` holds a non-finite value"
            ));
        }
        if let Some(layer) = self.net.locate_non_finite(theta, x, "") {
            return Some(format!(
                "the forward pass first becomes non-finite at {layer}"
            ));
        }
        if let Some(name) = tensor_with(grad) {
            return Some(format!(
                "the backward pass gives a non-finite gradient for `{name}`"
            ));
        }
        // Every entry finite: the norm overflowed. Name the tensor with the largest entry.
        let (mut at, mut best) = (0, (0.0f64, String::new()));
        for s in &specs {
            let m = grad[at..at + s.len()]
                .iter()
                .fold(0.0f64, |a, g| a.max(g.abs()));
            if m > best.0 {
                best = (m, s.name.clone());
            }
            at += s.len();
        }
        (best.0 > 0.0).then(|| {
            format!(
                "the gradient overflows: |∂L/∂θ| reaches {:e} in `{}`",
                best.0, best.1
            )
        })
    }

    /// The architecture as indented lines (one per layer, with parameter counts).
    pub fn summary_lines(&self) -> Vec<String> {
        fn walk(l: &dyn Layer, depth: usize, out: &mut Vec<String>) {
            let np = l.num_params();
            let params = if np > 0 {
                format!("  [{np} params]")
            } else {
                String::new()
            };
            out.push(format!("{}{}{}", "  ".repeat(depth), l.describe(), params));
            for c in l.children() {
                walk(c, depth + 1, out);
            }
        }
        let mut out = Vec::new();
        walk(self.net.as_ref(), 0, &mut out);
        out
    }
}
