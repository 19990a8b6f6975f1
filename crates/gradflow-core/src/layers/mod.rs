//! The layer abstraction of eq. (1): every layer knows, on a whole batch at once, its `forward`,
//! its `vjp` (reverse mode) and its `jvp` (forward mode). Everything else — the loss gradient, NTK
//! products, finite-difference tests — is built from these three.
//!
//! Batches ([`Batch`]) are (features × n) column-major blocks: column i holds sample i, so the
//! memory order is sample-major (i·features + a), the convention for outputs of
//! docs/theory.md, 'Conventions'.
//! Parameters are one flat vector θ; each layer sees only its own contiguous slice and describes
//! it by named [`ParamSpec`]s (used for initialisation and for safetensors names).
//! Composites (serial, residual) are layers too, so models nest like JAX's `stax` combinators.
//! What a layer is made of — affine, element-wise, a composition, a graph propagation — is told
//! by [`Layer::structure`] ([`structure`]), which is what every route dispatches on.

pub mod activation;
pub mod cheb;
pub mod combinators;
pub mod conv;
pub mod dense;
pub mod depthwise;
pub mod graphconv;
pub mod grouped;
pub mod identity;
pub mod image;
pub mod pool;
pub mod propagate;
pub mod residual;
pub mod serial;
pub mod structure;
pub mod upsample;

pub use activation::ActivationLayer;
pub use cheb::ChebConv;
pub use combinators::{FanOutConcat, PairCombine, Parallel, SharedPair};
pub use conv::Conv2d;
pub use dense::Dense;
pub use depthwise::DepthwiseConv2d;
pub use graphconv::GraphConv;
pub use grouped::GroupedConv2d;
pub use identity::Identity;
pub use image::ImageShape;
pub use pool::{AvgPool2d, MaxPool2d};
pub use propagate::Propagate;
pub use residual::Residual;
pub use serial::Serial;
pub use structure::{Affine, GraphBasis, GraphStructure, Structure};
pub use upsample::Upsample2d;

use crate::activation::Activation;
pub use crate::batch::Batch;
use std::any::Any;

/// What a layer remembers between `forward` and `vjp`/`jvp` (its input is passed separately).
pub type Tape = Box<dyn Any + Send + Sync>;

/// An empty tape, for layers that need nothing beyond their input.
pub fn no_tape() -> Tape {
    Box::new(())
}

/// How a parameter tensor is initialised: which fan-in it sees and what kind of tensor it is.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamRole {
    /// A weight whose fan-in is `fan_in` (PyTorch: in_features, or C_in·k_h·k_w).
    Weight { fan_in: usize },
    /// A bias next to a weight with fan-in `fan_in`.
    Bias { fan_in: usize },
    /// A scalar or vector set to a constant (PReLU's slope).
    Constant { value: f64 },
}

/// One named tensor in a layer's slice of θ, in row-major (C) order.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: ParamRole,
}

impl ParamSpec {
    /// The `weight` (given shape, first axis = outputs) and `bias` (one per output) of an affine
    /// layer with fan-in `fan_in`, in PyTorch's order and names.
    pub fn weight_and_bias(weight_shape: Vec<usize>, fan_in: usize) -> Vec<ParamSpec> {
        let out = weight_shape[0];
        vec![
            ParamSpec {
                name: "weight".into(),
                shape: weight_shape,
                role: ParamRole::Weight { fan_in },
            },
            ParamSpec {
                name: "bias".into(),
                shape: vec![out],
                role: ParamRole::Bias { fan_in },
            },
        ]
    }
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pre-activation batch seen by an activation, reported for kink diagnostics.
pub struct PreActivation<'a> {
    pub z: &'a Batch,
    pub activation: &'a Activation,
}

/// A differentiable map from a batch to a batch with parameters θ_layer.
///
/// Contracts (tested by finite differences for every implementation):
/// - `forward(θ, x) = (y, tape)`;
/// - `vjp(θ, x, tape, ȳ, θ̄)` returns x̄ = (∂y/∂x)ᵀ ȳ and **adds** (∂y/∂θ)ᵀ ȳ into θ̄
///   (adding lets shared weights accumulate);
/// - `jvp(θ, x, tape, ẋ, θ̇)` returns ẏ = (∂y/∂x) ẋ + (∂y/∂θ) θ̇.
///
/// ```
/// use gradflow_core::layers::{Batch, Dense, Layer};
///
/// // y = W x + b with W = [[1, 2]], b = [3]: θ is W row-major, then b (torch's Linear layout).
/// let dense = Dense::new(2, 1);
/// let theta = [1.0, 2.0, 3.0];
/// let x = Batch::from_vec(2, 1, vec![10.0, 20.0]);
/// let (y, tape) = dense.forward(&theta, &x);
/// assert_eq!(y.as_slice(), &[1.0 * 10.0 + 2.0 * 20.0 + 3.0]);
/// // vjp with ȳ = 1 returns x̄ = Wᵀ ȳ and *adds* ∂y/∂θ = (x, 1) into θ̄.
/// let mut theta_bar = vec![100.0; 3];
/// let x_bar = dense.vjp(&theta, &x, &tape, &Batch::from_vec(1, 1, vec![1.0]), &mut theta_bar);
/// assert_eq!(x_bar.as_slice(), &[1.0, 2.0]);
/// assert_eq!(theta_bar, vec![110.0, 120.0, 101.0]);
/// ```
pub trait Layer: Send + Sync + std::fmt::Debug {
    /// A one-line description, e.g. `dense 500 → 250`.
    fn describe(&self) -> String;
    /// Features per sample going in.
    fn in_dim(&self) -> usize;
    /// Features per sample coming out.
    fn out_dim(&self) -> usize;
    /// The named tensors of this layer's θ slice, in order.
    fn param_specs(&self) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// Number of parameters (length of this layer's θ slice).
    fn num_params(&self) -> usize {
        self.param_specs().iter().map(ParamSpec::len).sum()
    }
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape);
    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch;
    fn jvp(&self, theta: &[f64], x: &Batch, tape: &Tape, x_dot: &Batch, theta_dot: &[f64])
        -> Batch;
    /// The NTK's reverse pass. `y_bar` holds N = x.n()·reps output cotangents; column c belongs
    /// to sample c / reps and is one independent (sample, output-direction) pair. Returns the
    /// input cotangents (out of the same N columns) and **adds** into `gram` (N × N) the Gram
    /// matrix of per-column parameter cotangents, gram[c, c'] += ⟨θ̄_c, θ̄_c'⟩ — at least on and
    /// below the diagonal (c ≥ c'); entries above it may be left out, and the caller mirrors the
    /// lower triangle when the pass is done.
    ///
    /// Only for layers that do not mix samples. The default takes the structured product of
    /// [`dense::affine_vjp_gram`] for layers whose [`Layer::structure`] is affine, and otherwise
    /// handles parameter-free layers with one call per sample-independent column block and
    /// parametrised ones column by column (the generic route); activation layers, convolutions
    /// and the composites override it.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        match self.structure() {
            Structure::Affine(a) => dense::affine_vjp_gram(&a, theta, x, y_bar, reps, gram),
            _ => generic_vjp_gram(self, theta, x, tape, y_bar, reps, gram),
        }
    }
    /// Calls `visit` with every pre-activation batch inside this layer (for kink diagnostics).
    fn visit_pre_activations(
        &self,
        _x: &Batch,
        _tape: &Tape,
        _visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
    }
    /// Numerical health: the path (`path`, then `.k` per nesting level, as in tensor names) and
    /// description of the first layer whose forward output is not finite on (θ, x), or None.
    fn locate_non_finite(&self, theta: &[f64], x: &Batch, path: &str) -> Option<String> {
        let (y, _) = self.forward(theta, x);
        (!y.all_finite()).then(|| format!("layer `{path}` ({})", self.describe()))
    }
    /// The layers inside a composite (empty for a leaf), for printing architectures.
    fn children(&self) -> Vec<&dyn Layer> {
        Vec::new()
    }
    /// True when output column i depends on input columns other than i (graph propagation).
    fn mixes_samples(&self) -> bool {
        false
    }
    /// What this layer is made of ([`Structure`]): the routes of the NTK, the structured Gram
    /// pass, the training engine and the flow solver follow from it. The default, `Opaque`,
    /// means the layer is used through its own forward / vjp / jvp only.
    fn structure(&self) -> Structure<'_> {
        Structure::Opaque
    }
}

/// Downcasts a tape to the type a layer stored in it.
pub fn tape_ref<T: 'static>(tape: &Tape) -> &T {
    tape.downcast_ref::<T>()
        .expect("internal error: a layer received a tape of another layer")
}

/// The generic route behind [`Layer::vjp_gram`]: for each of the `reps` output directions, the
/// cotangents of all samples go through one ordinary `vjp` (input cotangents); per-column
/// parameter cotangents come from one `vjp` per column, gathered into a matrix P and added as PᵀP.
pub fn generic_vjp_gram<L: Layer + ?Sized>(
    layer: &L,
    theta: &[f64],
    x: &Batch,
    tape: &Tape,
    y_bar: &Batch,
    reps: usize,
    gram: &mut faer::Mat<f64>,
) -> Batch {
    assert!(
        layer.children().is_empty(),
        "`{}` is a composite: it must override vjp_gram to recurse into its children",
        layer.describe()
    );
    let (n, out) = (x.n(), y_bar.features());
    let big_n = n * reps;
    assert_eq!(
        y_bar.n(),
        big_n,
        "vjp_gram: y_bar must have x.n()·reps columns"
    );
    let np = layer.num_params();
    let mut x_bar = Batch::zeros(layer.in_dim(), big_n);
    let mut scratch = vec![0.0; np];
    for r in 0..reps {
        let mut yb = Batch::zeros(out, n);
        for i in 0..n {
            yb.col_mut(i).copy_from_slice(y_bar.col(i * reps + r));
        }
        let xb = layer.vjp(theta, x, tape, &yb, &mut scratch);
        for i in 0..n {
            x_bar.col_mut(i * reps + r).copy_from_slice(xb.col(i));
        }
    }
    if np > 0 {
        let mut p = faer::Mat::<f64>::zeros(np, big_n);
        for c in 0..big_n {
            let mut yb = Batch::zeros(out, n);
            yb.col_mut(c / reps).copy_from_slice(y_bar.col(c));
            let mut g = vec![0.0; np];
            layer.vjp(theta, x, tape, &yb, &mut g);
            for (k, v) in g.into_iter().enumerate() {
                p[(k, c)] = v;
            }
        }
        faer::linalg::matmul::matmul(
            gram.as_mut(),
            faer::Accum::Add,
            p.transpose(),
            p.as_ref(),
            1.0,
            crate::batch::par(),
        );
    }
    x_bar
}
