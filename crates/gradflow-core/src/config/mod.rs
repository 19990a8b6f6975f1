//! The TOML configuration of a run: schema, defaults, and validation with precise errors.
//!
//! A config file is read in two steps. First serde turns the text into the `Raw*` structs, which
//! mirror the file exactly (every key optional where the schema has a default, unknown keys
//! rejected by `deny_unknown_fields`). Then [`Config::from_str`] checks the values against each
//! other and resolves them into [`Config`], made of plain Rust types with every default filled in
//! and every data path resolved against the config file's directory.
//!
//! Every failure is an [`Error::Config`] naming the file, the field as a dotted path
//! (`model.hidden`, `train.lr`, …) and, where there is one, the fix. Errors found by the TOML
//! parser keep its message, which gives the line and column.
//!
//! ```toml
//! seed = 0                      # one seed drives data, graph and initialisation (default 0)
//! [data]
//! kind = "ball"                 # "ball": x uniform in the unit ball of R^d, y ~ N(0, I_m)
//! n = 1000                      # or kind = "npy" with x = "x.npy", y = "y.npy"
//! d = 500                       # or kind = "images" with n, channels, height, width, m
//! m = 50                        # or kind = "pairs" with n, d, m (x = [a; b], a, b ∈ R^d)
//! [graph]                       # graph presets (gcn, cheb, graphconv) only; default k = 10
//! k = 10                        # or edges = "edges.csv" (exactly one of the two)
//! [model]
//! preset = "dnn"                # dnn | resnet | gcn | cnn | conv-resnet | cheb | graphconv
//!                               # | unet | mobilenet | siamese
//! hidden = [250, 250]           # dnn, gcn, cheb, graphconv, siamese (the shared tower): widths
//! # depth = 16                  # resnet, conv-resnet: number of residual blocks
//! # channels = [16, 32]         # cnn, unet, mobilenet: widths; conv-resnet: [width]
//! # kernel = 3                  # cnn, conv-resnet, unet, mobilenet: odd kernel size (default 3)
//! # order = 3                   # cheb: Chebyshev order K (default 3)
//! # combine = "abs-diff"        # siamese: |f(a) − f(b)| (default) or "concat": [f(a); f(b)]
//! activation = "leaky-relu"     # or { kind = "leaky-relu", slope = 0.01 }, "prelu", "relu",
//!                               # "sigmoid", { kind = "piecewise", breakpoints, coefficients }
//! init = "torch"                # or "kaiming-normal", { kind = "normal", std = 0.1 }
//! [train]                       # optional; these are the defaults except epochs (1000)
//! solver = "gd"
//! lr = 0.01
//! epochs = 10000
//! loss = "mse"                  # or "half-sse"
//! precision = "f64"
//! log_every = 1
//! [ntk]                         # optional
//! every = 100                   # λ_min checkpoints; 0 = only at the start and the end (default)
//! memory_budget_gb = 8.0
//! enabled = true
//! ```
//!
//! Image presets (cnn, conv-resnet, unet, mobilenet) take `data.kind = "images"` and only them;
//! siamese takes `data.kind = "pairs"` and only it. A validated preset is a [`ModelSpec`]: one
//! variant per preset, holding exactly the keys that preset takes.
//!
//! The module is split into `raw` (the serde schema), `preset` ([`ModelSpec`] and [`Preset`]),
//! `validate` and `model` (checks and resolution), `locate` (line numbers for errors) and
//! `write` ([`Config::to_toml`]).

mod locate;
mod model;
mod preset;
mod raw;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_arch;
#[cfg(test)]
mod tests_layers;
#[cfg(test)]
mod tests_spec;
mod validate;
mod write;

pub(crate) use model::{parse_activation, parse_init};
pub use preset::{ModelSpec, Preset};
pub use raw::{
    NameOrTable, RawActivationTable, RawConfig, RawData, RawGraph, RawInitTable, RawModel, RawNtk,
    RawTrain,
};
pub use validate::check_layer_outputs;

use crate::activation::Activation;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

pub use crate::init::InitScheme;
pub use crate::loss::LossKind;

// ---------------------------------------------------------------------------------------------
// Resolved configuration.
// ---------------------------------------------------------------------------------------------

/// A validated configuration with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub seed: u64,
    pub data: DataConfig,
    /// `Some` exactly for models on the samples' graph ([`ModelConfig::needs_graph`]).
    pub graph: Option<GraphConfig>,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub ntk: NtkConfig,
    /// The directory relative paths in the file were resolved against (made absolute when the
    /// working directory is known).
    pub base_dir: PathBuf,
    /// Where the config came from (its path, or a label for built-in configs), for errors found
    /// after parsing (e.g. `graph.k` against the n of `.npy` data).
    pub source: PathBuf,
}

/// Where the samples come from.
#[derive(Clone, Debug, PartialEq)]
pub enum DataConfig {
    /// n inputs uniform in the unit ball of R^d, targets N(0, I_m).
    Ball { n: usize, d: usize, m: usize },
    /// Inputs (n × d) and targets (n × m) from `.npy` files; paths already resolved.
    Npy { x: PathBuf, y: PathBuf },
    /// n images of `channels`×`height`×`width` (PyTorch layout, flattened), uniform in the unit
    /// ball of R^{C·H·W}; targets N(0, I_m), or for unet m×H×W images (m output channels).
    Images {
        n: usize,
        channels: usize,
        height: usize,
        width: usize,
        m: usize,
    },
    /// n pairs x = [a; b] with a and b uniform in the unit ball of R^d (2d features); targets
    /// N(0, I_m).
    Pairs { n: usize, d: usize, m: usize },
}

impl DataConfig {
    /// (n, d, m) when they are known before loading anything (ball data).
    pub fn dims(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Self::Ball { n, d, m } => Some((n, d, m)),
            _ => None,
        }
    }

    /// The `data.kind` this was written as: "ball", "npy", "images" or "pairs".
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ball { .. } => "ball",
            Self::Npy { .. } => "npy",
            Self::Images { .. } => "images",
            Self::Pairs { .. } => "pairs",
        }
    }

    /// The number of samples when known before loading anything (every kind but npy).
    pub fn n(&self) -> Option<usize> {
        match *self {
            Self::Ball { n, .. } | Self::Images { n, .. } | Self::Pairs { n, .. } => Some(n),
            Self::Npy { .. } => None,
        }
    }

    /// `data.m` when known before loading anything (every kind but npy); for unet the number of
    /// output channels.
    pub fn m(&self) -> Option<usize> {
        match *self {
            Self::Ball { m, .. } | Self::Images { m, .. } | Self::Pairs { m, .. } => Some(m),
            Self::Npy { .. } => None,
        }
    }

    /// Features per sample when known before loading anything: d (ball), C·H·W (images),
    /// 2d (pairs).
    pub fn input_dim(&self) -> Option<usize> {
        match *self {
            Self::Ball { d, .. } => Some(d),
            Self::Images {
                channels,
                height,
                width,
                ..
            } => Some(channels * height * width),
            Self::Pairs { d, .. } => Some(2 * d),
            Self::Npy { .. } => None,
        }
    }

    /// (channels, height, width) of image data.
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Self::Images {
                channels,
                height,
                width,
                ..
            } => Some((channels, height, width)),
            _ => None,
        }
    }
}

/// The graph on the n samples used by graph presets.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphConfig {
    /// The symmetrised k-nearest-neighbour graph of the inputs.
    Knn { k: usize },
    /// An edge list (CSV); path already resolved.
    Edges { path: PathBuf },
}

/// What a model is built from: a preset with its keys, or a list of layers.
#[derive(Clone, Debug, PartialEq)]
pub enum Architecture {
    Preset(ModelSpec),
    /// `[[model.layers]]` ([`crate::spec`]), already checked against `[data]` where its sizes
    /// are known before loading anything.
    Layers(Vec<crate::spec::LayerSpec>),
}

/// The architecture and its initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Architecture,
    pub activation: Activation,
    pub init: InitScheme,
}

impl ModelConfig {
    /// The preset, None for a layer list.
    pub fn preset(&self) -> Option<Preset> {
        self.spec().map(ModelSpec::preset)
    }
    /// The preset with its keys, None for a layer list.
    pub fn spec(&self) -> Option<&ModelSpec> {
        match &self.arch {
            Architecture::Preset(spec) => Some(spec),
            Architecture::Layers(_) => None,
        }
    }
    /// The layer list, None for a preset.
    pub fn layers(&self) -> Option<&[crate::spec::LayerSpec]> {
        match &self.arch {
            Architecture::Preset(_) => None,
            Architecture::Layers(l) => Some(l),
        }
    }
    /// True when the model works on the samples' graph (a `[graph]` section is needed).
    pub fn needs_graph(&self) -> bool {
        match &self.arch {
            Architecture::Preset(spec) => spec.preset().is_graph(),
            Architecture::Layers(l) => l.iter().any(crate::spec::LayerSpec::uses_graph),
        }
    }
    /// How errors and summaries name the architecture: `preset dnn`, or `a layer list`.
    pub fn label(&self) -> String {
        match &self.arch {
            Architecture::Preset(spec) => format!("preset {}", spec.preset()),
            Architecture::Layers(_) => "a layer list".into(),
        }
    }
}

/// How the gradient flow is integrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Solver {
    /// Full-batch gradient descent with a fixed step (Euler's method on the flow).
    Gd,
    /// The true flow: adaptive, error-controlled, kink-aware Runge–Kutta (see `crate::flow`).
    Flow,
}

impl Solver {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gd => "gd",
            Self::Flow => "flow",
        }
    }
}

/// `solver = "flow"` settings (in `[train]`).
#[derive(Clone, Debug, PartialEq)]
pub struct FlowConfig {
    /// End time T (default: the GD horizon lr·epochs).
    pub t_end: f64,
    pub rtol: f64,
    pub atol: f64,
    /// Metrics rows at T·k/outputs, k = 0..=outputs.
    pub outputs: usize,
    /// Handle kinks (events + sliding); false gives the classic solve, for comparison.
    pub kink_aware: bool,
    /// Also run GD with step lr to t_end and report ‖θ_GD − θ_GF‖/‖θ_GF‖ and the loss gap.
    pub compare_gd: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            t_end: 10.0,
            rtol: 1e-8,
            atol: 1e-10,
            outputs: 200,
            kink_aware: true,
            compare_gd: false,
        }
    }
}

/// The floating-point type of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F64,
    /// Training in f32 (the dnn, resnet and gcn presets only; NTK spectra stay in f64).
    F32,
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Self::F64 => "f64",
            Self::F32 => "f32",
        }
    }
}

/// `[train]`, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    pub solver: Solver,
    /// The GD step η (> 0, finite).
    pub lr: f64,
    /// Number of GD steps; 0 only evaluates.
    pub epochs: usize,
    pub loss: LossKind,
    pub precision: Precision,
    /// A metrics row every this many epochs (≥ 1).
    pub log_every: usize,
    /// Settings of the flow solve (used when `solver` is `Flow`).
    pub flow: FlowConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            solver: Solver::Gd,
            lr: 0.01,
            epochs: 1000,
            loss: LossKind::Mse,
            precision: Precision::F64,
            log_every: 1,
            flow: FlowConfig::default(),
        }
    }
}

/// `[ntk]`, resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct NtkConfig {
    /// λ_min checkpoints every this many epochs; 0 = only at the start and the end.
    pub every: usize,
    /// Memory allowed for a dense NTK, in GB (> 0).
    pub memory_budget_gb: f64,
    pub enabled: bool,
}

impl Default for NtkConfig {
    fn default() -> Self {
        Self {
            every: 0,
            memory_budget_gb: 8.0,
            enabled: true,
        }
    }
}

/// Default k of the k-nearest-neighbour graph.
pub const DEFAULT_K: usize = 10;
/// Default `model.kernel` of the convolutional presets.
pub const DEFAULT_KERNEL: usize = 3;
/// Default `model.order` (Chebyshev K) of preset cheb.
pub const DEFAULT_ORDER: usize = 3;

// ---------------------------------------------------------------------------------------------
// Parsing and validation.
// ---------------------------------------------------------------------------------------------

/// The innermost entry of `model.layers` that does not read as a layer, with serde's message
/// (serde reports a bad nested entry at its top-level entry).
fn bad_layer(text: &str) -> Option<(String, String)> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let layers = doc.get("model")?.get("layers")?;
    let value = serde_json::to_value(layers).ok()?;
    crate::spec::first_bad_layer(&value, "model.layers")
}

impl Config {
    /// Outputs per sample when known before loading anything: `data.m`, or m·H·W for unet (its
    /// targets are m×H×W images).
    pub fn output_dim(&self) -> Option<usize> {
        match (self.model.preset(), &self.data) {
            (
                Some(Preset::Unet),
                DataConfig::Images {
                    height, width, m, ..
                },
            ) => Some(m * height * width),
            (_, data) => data.m(),
        }
    }

    /// Reads and validates the config at `path`; relative paths inside are resolved against the
    /// file's directory.
    pub fn from_path(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let dir = path.parent().unwrap_or(Path::new(""));
        Self::from_str(&text, path, dir)
    }

    /// Parses and validates `text`. `file_label` names the source in errors; relative paths are
    /// resolved against `base_dir` (made absolute against the working directory when possible).
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(text: &str, file_label: &Path, base_dir: &Path) -> Result<Config> {
        // The syntax first, so that its errors are reported as such.
        let doc = toml::de::DeTable::parse(text)
            .map_err(|e| Error::config(file_label, "(syntax)", e.to_string().trim_end()))?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let field = locate::toml_error_field(doc.get_ref(), &e);
            if field.starts_with("model.layers") {
                if let Some((field, message)) = bad_layer(text) {
                    let message = match locate::locate_field(text, doc.get_ref(), &field) {
                        Some((line, _)) => format!("{message} (line {line})"),
                        None => message,
                    };
                    return Error::config(file_label, &field, message);
                }
            }
            Error::config(file_label, &field, e.to_string().trim_end())
        })?;
        let base_dir = validate::absolute(base_dir);
        Self::from_raw(raw, file_label, &base_dir).map_err(|e| match e {
            Error::Config {
                file,
                field,
                message,
            } => {
                let message = match locate::locate_field(text, doc.get_ref(), &field) {
                    Some((line, found)) if found == field => format!("{message} (line {line})"),
                    Some((line, found)) => format!("{message} (in `{found}` at line {line})"),
                    None => message,
                };
                Error::Config {
                    file,
                    field,
                    message,
                }
            }
            other => other,
        })
    }
}
