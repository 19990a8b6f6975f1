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
//! d = 500
//! m = 50
//! [graph]                       # graph presets (gcn) only; default k = 10
//! k = 10                        # or edges = "edges.csv" (exactly one of the two)
//! [model]
//! preset = "dnn"                # dnn | resnet | gcn
//! hidden = [250, 250]           # dnn, gcn: hidden widths
//! # depth = 16                  # resnet: number of residual blocks (width = d)
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

use crate::activation::{Activation, PiecewisePolynomial};
use crate::error::{Error, Result};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt::{self, Write as _};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

pub use crate::init::InitScheme;
pub use crate::loss::LossKind;

// ---------------------------------------------------------------------------------------------
// Raw schema: what the file says, before validation.
// ---------------------------------------------------------------------------------------------

/// The file as written: sections `[data]` and `[model]` are required, the others optional.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    pub data: RawData,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<RawGraph>,
    pub model: RawModel,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<RawTrain>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ntk: Option<RawNtk>,
}

/// `[data]`: `kind` selects which of the other keys are used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawData {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub d: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// `[graph]`: exactly one of `k` (k-nearest-neighbour graph) and `edges` (a CSV edge list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGraph {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edges: Option<String>,
}

/// `[model]`: `preset` selects which of `hidden` / `depth` is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub preset: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<Vec<usize>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<NameOrTable<RawActivationTable>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<NameOrTable<RawInitTable>>,
}

/// A value written either as a bare name (`"relu"`) or as a table with a `kind` key.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum NameOrTable<T> {
    Name(String),
    Table(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for NameOrTable<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = NameOrTable<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a name (a string) or a table with a `kind` key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(NameOrTable::Name(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                map: A,
            ) -> std::result::Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map)).map(NameOrTable::Table)
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

/// The table form of `model.activation`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActivationTable {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slope: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakpoints: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coefficients: Option<Vec<Vec<f64>>>,
}

/// The table form of `model.init`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInitTable {
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
}

/// `[train]`: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrain {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_every: Option<usize>,
}

/// `[ntk]`: every key optional.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNtk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_budget_gb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Resolved configuration.
// ---------------------------------------------------------------------------------------------

/// A validated configuration with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub seed: u64,
    pub data: DataConfig,
    /// `Some` exactly for graph presets ([`Preset::is_graph`]).
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
}

impl DataConfig {
    /// (n, d, m) when they are known before loading anything (ball data).
    pub fn dims(&self) -> Option<(usize, usize, usize)> {
        match *self {
            Self::Ball { n, d, m } => Some((n, d, m)),
            Self::Npy { .. } => None,
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

/// The architecture and its initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub preset: Preset,
    /// Hidden widths (dnn, gcn); empty for resnet.
    pub hidden: Vec<usize>,
    /// Number of residual blocks (resnet); 0 for the other presets.
    pub depth: usize,
    pub activation: Activation,
    pub init: InitScheme,
}

/// The architectures that can be built from a config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    Dnn,
    Resnet,
    Gcn,
}

impl Preset {
    /// Every available preset, in the order they are listed to users.
    pub const ALL: [Preset; 3] = [Preset::Dnn, Preset::Resnet, Preset::Gcn];
    /// Presets named in the design that are not implemented yet.
    pub const PLANNED: [&'static str; 7] = [
        "cnn",
        "conv-resnet",
        "cheb",
        "graphconv",
        "unet",
        "mobilenet",
        "siamese",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Dnn => "dnn",
            Self::Resnet => "resnet",
            Self::Gcn => "gcn",
        }
    }

    /// True when the preset needs a graph on the samples (a `[graph]` section).
    pub fn is_graph(&self) -> bool {
        matches!(self, Self::Gcn)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    fn available() -> String {
        Self::ALL.map(|p| p.name()).join(", ")
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the gradient flow is integrated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Solver {
    /// Full-batch gradient descent with a fixed step (Euler's method on the flow).
    Gd,
}

impl Solver {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Gd => "gd",
        }
    }
}

/// The floating-point type of training.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Precision {
    F64,
}

impl Precision {
    pub fn name(&self) -> &'static str {
        match self {
            Self::F64 => "f64",
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

// ---------------------------------------------------------------------------------------------
// Parsing and validation.
// ---------------------------------------------------------------------------------------------

impl Config {
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
            let field = toml_error_field(doc.get_ref(), &e);
            Error::config(file_label, &field, e.to_string().trim_end())
        })?;
        let base_dir = absolute(base_dir);
        Self::from_raw(raw, file_label, &base_dir).map_err(|e| match e {
            Error::Config {
                file,
                field,
                message,
            } => {
                let message = match locate_field(text, doc.get_ref(), &field) {
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

    /// Validates already-deserialised raw values (`file_label` names the source in errors).
    pub fn from_raw(raw: RawConfig, file_label: &Path, base_dir: &Path) -> Result<Config> {
        let err = |field: &str, message: String| Error::config(file_label, field, message);
        let resolve = |p: &str| base_dir.join(p);

        // [data]
        let data = {
            let r = &raw.data;
            match r.kind.as_str() {
                "ball" => {
                    for (key, present) in [("x", r.x.is_some()), ("y", r.y.is_some())] {
                        if present {
                            return Err(err(
                                &format!("data.{key}"),
                                format!("`data.{key}` is only used by data.kind = \"npy\"; remove it (ball data are generated from n, d, m)"),
                            ));
                        }
                    }
                    let dim = |key: &str, v: Option<usize>, what: &str| {
                        match v {
                        None => Err(err(
                            &format!("data.{key}"),
                            format!("`data.{key}` is required for data.kind = \"ball\": {what}, e.g. {key} = 100"),
                        )),
                        Some(0) => Err(err(
                            &format!("data.{key}"),
                            format!("`data.{key}` must be at least 1 ({what})"),
                        )),
                        Some(v) => Ok(v),
                    }
                    };
                    DataConfig::Ball {
                        n: dim("n", r.n, "the number of samples")?,
                        d: dim("d", r.d, "the input dimension")?,
                        m: dim("m", r.m, "the output dimension")?,
                    }
                }
                "npy" => {
                    for (key, present) in [
                        ("n", r.n.is_some()),
                        ("d", r.d.is_some()),
                        ("m", r.m.is_some()),
                    ] {
                        if present {
                            return Err(err(
                                &format!("data.{key}"),
                                format!("`data.{key}` is only used by data.kind = \"ball\"; remove it (npy data take n, d, m from the arrays)"),
                            ));
                        }
                    }
                    let path = |key: &str, v: &Option<String>, what: &str| {
                        match v {
                        None => Err(err(
                            &format!("data.{key}"),
                            format!("`data.{key}` is required for data.kind = \"npy\": the path of {what}, e.g. {key} = \"{key}.npy\" (relative to the config's directory)"),
                        )),
                        Some(s) if s.is_empty() => Err(err(
                            &format!("data.{key}"),
                            format!("`data.{key}` is empty; give the path of {what}"),
                        )),
                        Some(s) => Ok(resolve(s)),
                    }
                    };
                    DataConfig::Npy {
                        x: path("x", &r.x, "the n × d inputs")?,
                        y: path("y", &r.y, "the n × m targets")?,
                    }
                }
                other => {
                    return Err(err(
                        "data.kind",
                        format!("unknown data kind `{other}`; available: ball, npy"),
                    ))
                }
            }
        };

        // [model]
        let m = &raw.model;
        let preset = match Preset::from_name(&m.preset) {
            Some(p) => p,
            None if Preset::PLANNED.contains(&m.preset.as_str()) => {
                return Err(err(
                    "model.preset",
                    format!(
                        "preset `{}` is not available yet; available: {}",
                        m.preset,
                        Preset::available()
                    ),
                ))
            }
            None => {
                return Err(err(
                    "model.preset",
                    format!(
                        "unknown preset `{}`; available: {}",
                        m.preset,
                        Preset::available()
                    ),
                ))
            }
        };
        let (hidden, depth) = match preset {
            Preset::Dnn | Preset::Gcn => {
                if m.depth.is_some() {
                    return Err(err(
                        "model.depth",
                        "`model.depth` is only used by preset resnet; remove it (the depth of a dnn or gcn is the length of `model.hidden`)".into(),
                    ));
                }
                let hidden = match &m.hidden {
                    None => {
                        return Err(err(
                            "model.hidden",
                            format!("`model.hidden` is required for preset {preset}: the hidden-layer widths, e.g. hidden = [250, 250]"),
                        ))
                    }
                    Some(h) if h.is_empty() => {
                        return Err(err(
                            "model.hidden",
                            "`model.hidden` is empty; list at least one hidden width, e.g. hidden = [64, 64]".into(),
                        ))
                    }
                    Some(h) => h.clone(),
                };
                if let Some(i) = hidden.iter().position(|&w| w == 0) {
                    return Err(err(
                        "model.hidden",
                        format!("width {i} of `model.hidden` is 0; every width must be at least 1"),
                    ));
                }
                (hidden, 0)
            }
            Preset::Resnet => {
                if m.hidden.is_some() {
                    return Err(err(
                        "model.hidden",
                        "`model.hidden` is only used by presets dnn and gcn; remove it (a resnet's width is data.d; set the number of blocks with `model.depth`)".into(),
                    ));
                }
                match m.depth {
                    None => {
                        return Err(err(
                            "model.depth",
                            "`model.depth` is required for preset resnet: the number of residual blocks, e.g. depth = 16".into(),
                        ))
                    }
                    Some(0) => {
                        return Err(err(
                            "model.depth",
                            "`model.depth` must be at least 1 (the number of residual blocks)".into(),
                        ))
                    }
                    Some(depth) => (Vec::new(), depth),
                }
            }
        };
        let activation = match &m.activation {
            None => Activation::leaky_relu(),
            Some(a) => parse_activation(a, file_label)?,
        };
        let init = match &m.init {
            None => InitScheme::Torch,
            Some(i) => parse_init(i, file_label)?,
        };
        let model = ModelConfig {
            preset,
            hidden,
            depth,
            activation,
            init,
        };

        // [graph]
        let graph = if preset.is_graph() {
            let g = raw.graph.clone().unwrap_or_default();
            Some(match (g.k, g.edges) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "graph",
                        "set exactly one of `graph.k` (k-nearest-neighbour graph) and `graph.edges` (edge-list CSV), not both".into(),
                    ))
                }
                (None, Some(e)) if e.is_empty() => {
                    return Err(err(
                        "graph.edges",
                        "`graph.edges` is empty; give the path of an edge-list CSV".into(),
                    ))
                }
                (None, Some(e)) => GraphConfig::Edges { path: resolve(&e) },
                (k, None) => {
                    let defaulted = k.is_none();
                    let k = k.unwrap_or(DEFAULT_K);
                    if k == 0 {
                        return Err(err("graph.k", "`graph.k` must be at least 1".into()));
                    }
                    if let DataConfig::Ball { n, .. } = data {
                        if k >= n {
                            return Err(err(
                                "graph.k",
                                format!(
                                    "`graph.k` = {k} must be smaller than `data.n` = {n}; {}",
                                    if defaulted {
                                        format!("{DEFAULT_K} is the default: add a [graph] section with a smaller k, or raise n")
                                    } else {
                                        "lower k or raise n".to_string()
                                    }
                                ),
                            ));
                        }
                    }
                    GraphConfig::Knn { k }
                }
            })
        } else {
            if raw.graph.is_some() {
                return Err(err(
                    "graph",
                    format!("a [graph] section is only used by graph presets (gcn); remove it for preset {preset}"),
                ));
            }
            None
        };

        // [train]
        let t = raw.train.clone().unwrap_or_default();
        let defaults = TrainConfig::default();
        let solver = match t.solver.as_deref() {
            None | Some("gd") => Solver::Gd,
            Some("flow") => {
                return Err(err(
                    "train.solver",
                    "solver `flow` (error-controlled gradient-flow solve) is not available yet; use \"gd\"".into(),
                ))
            }
            Some(other) => {
                return Err(err(
                    "train.solver",
                    format!("unknown solver `{other}`; available: gd"),
                ))
            }
        };
        let lr = t.lr.unwrap_or(defaults.lr);
        if !(lr.is_finite() && lr > 0.0) {
            return Err(err(
                "train.lr",
                format!("`train.lr` = {lr} is not allowed: the step must be positive and finite, e.g. lr = 0.01"),
            ));
        }
        let loss = match t.loss.as_deref() {
            None => defaults.loss,
            Some("mse") => LossKind::Mse,
            Some("half-sse") => LossKind::HalfSse,
            Some(other) => {
                return Err(err(
                    "train.loss",
                    format!("unknown loss `{other}`; available: mse (mean over n·m entries, PyTorch's MSELoss), half-sse (½‖e‖²)"),
                ))
            }
        };
        let precision = match t.precision.as_deref() {
            None | Some("f64") => Precision::F64,
            Some("f32") => {
                return Err(err(
                    "train.precision",
                    "precision `f32` is not available yet; use \"f64\"".into(),
                ))
            }
            Some(other) => {
                return Err(err(
                    "train.precision",
                    format!("unknown precision `{other}`; available: f64"),
                ))
            }
        };
        let log_every = t.log_every.unwrap_or(defaults.log_every);
        if log_every == 0 {
            return Err(err(
                "train.log_every",
                "`train.log_every` must be at least 1 (a metrics row every this many epochs)"
                    .into(),
            ));
        }
        let train = TrainConfig {
            solver,
            lr,
            epochs: t.epochs.unwrap_or(defaults.epochs),
            loss,
            precision,
            log_every,
        };

        // [ntk]
        let k = raw.ntk.clone().unwrap_or_default();
        let defaults = NtkConfig::default();
        let memory_budget_gb = k.memory_budget_gb.unwrap_or(defaults.memory_budget_gb);
        if !(memory_budget_gb.is_finite() && memory_budget_gb > 0.0) {
            return Err(err(
                "ntk.memory_budget_gb",
                format!("`ntk.memory_budget_gb` = {memory_budget_gb} must be positive and finite, e.g. memory_budget_gb = 8.0"),
            ));
        }
        let ntk = NtkConfig {
            every: k.every.unwrap_or(defaults.every),
            memory_budget_gb,
            enabled: k.enabled.unwrap_or(defaults.enabled),
        };

        Ok(Config {
            seed: raw.seed.unwrap_or(0),
            data,
            graph,
            model,
            train,
            ntk,
            base_dir: base_dir.to_path_buf(),
            source: file_label.to_path_buf(),
        })
    }

    /// The resolved config as TOML: every default written out, the activation as a table, data
    /// paths as resolved (absolute when `base_dir` is). Parsing it back with [`Config::from_str`]
    /// and the same `base_dir` gives an equal `Config`.
    ///
    /// # Panics
    /// If `seed` exceeds `i64::MAX`, which TOML integers cannot hold.
    pub fn to_toml(&self) -> String {
        assert!(
            i64::try_from(self.seed).is_ok(),
            "seed {} exceeds i64::MAX and cannot be written as a TOML integer",
            self.seed
        );
        let mut s = String::new();
        let w = &mut s;
        let _ = writeln!(w, "# Resolved gradflow config: every default filled in.");
        let _ = writeln!(w, "seed = {}", self.seed);
        let _ = writeln!(w, "\n[data]");
        match &self.data {
            DataConfig::Ball { n, d, m } => {
                let _ = writeln!(w, "kind = \"ball\"\nn = {n}\nd = {d}\nm = {m}");
            }
            DataConfig::Npy { x, y } => {
                let _ = writeln!(
                    w,
                    "kind = \"npy\"\nx = {}\ny = {}",
                    toml_path(x),
                    toml_path(y)
                );
            }
        }
        if let Some(g) = &self.graph {
            let _ = writeln!(w, "\n[graph]");
            match g {
                GraphConfig::Knn { k } => {
                    let _ = writeln!(w, "k = {k}");
                }
                GraphConfig::Edges { path } => {
                    let _ = writeln!(w, "edges = {}", toml_path(path));
                }
            }
        }
        let m = &self.model;
        let _ = writeln!(w, "\n[model]\npreset = \"{}\"", m.preset.name());
        match m.preset {
            Preset::Dnn | Preset::Gcn => {
                let _ = writeln!(w, "hidden = {:?}", m.hidden);
            }
            Preset::Resnet => {
                let _ = writeln!(w, "depth = {}", m.depth);
            }
        }
        let _ = writeln!(w, "activation = {}", activation_toml(&m.activation));
        let _ = writeln!(w, "init = {}", init_toml(&m.init));
        let t = &self.train;
        let _ = writeln!(
            w,
            "\n[train]\nsolver = \"{}\"\nlr = {}\nepochs = {}\nloss = \"{}\"\nprecision = \"{}\"\nlog_every = {}",
            t.solver.name(),
            toml_float(t.lr),
            t.epochs,
            t.loss.name(),
            t.precision.name(),
            t.log_every
        );
        let n = &self.ntk;
        let _ = writeln!(
            w,
            "\n[ntk]\nevery = {}\nmemory_budget_gb = {}\nenabled = {}",
            n.every,
            toml_float(n.memory_budget_gb),
            n.enabled
        );
        s
    }
}

fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

fn parse_activation(a: &NameOrTable<RawActivationTable>, file: &Path) -> Result<Activation> {
    const FIELD: &str = "model.activation";
    const AVAILABLE: &str = "leaky-relu, prelu, relu, sigmoid, piecewise";
    let unknown = |kind: &str| {
        Error::config(
            file,
            FIELD,
            format!("unknown activation `{kind}`; available: {AVAILABLE}"),
        )
    };
    match a {
        NameOrTable::Name(name) => match name.as_str() {
            "leaky-relu" => Ok(Activation::leaky_relu()),
            "prelu" => Ok(Activation::Prelu {
                init: Activation::DEFAULT_PRELU_INIT,
            }),
            "relu" => Ok(Activation::Relu),
            "sigmoid" => Ok(Activation::Sigmoid),
            "piecewise" => Err(Error::config(
                file,
                FIELD,
                "a piecewise activation needs its pieces; write it as a table: activation = { kind = \"piecewise\", breakpoints = [-1.0, 1.0], coefficients = [[-0.5], [0.0, 0.5], [0.5]] }",
            )),
            other => Err(unknown(other)),
        },
        NameOrTable::Table(t) => {
            let uses: &[&str] = match t.kind.as_str() {
                "leaky-relu" => &["slope"],
                "prelu" => &["init"],
                "relu" | "sigmoid" => &[],
                "piecewise" => &["breakpoints", "coefficients"],
                other => return Err(unknown(other)),
            };
            let present = [
                ("slope", t.slope.is_some()),
                ("init", t.init.is_some()),
                ("breakpoints", t.breakpoints.is_some()),
                ("coefficients", t.coefficients.is_some()),
            ];
            for (key, is_set) in present {
                if is_set && !uses.contains(&key) {
                    return Err(Error::config(
                        file,
                        &format!("{FIELD}.{key}"),
                        format!(
                            "`{FIELD}.{key}` is not used by activation kind `{}`; remove it",
                            t.kind
                        ),
                    ));
                }
            }
            match t.kind.as_str() {
                "leaky-relu" => {
                    let slope = t.slope.unwrap_or(Activation::DEFAULT_LEAKY_SLOPE);
                    if !slope.is_finite() {
                        return Err(Error::config(
                            file,
                            "model.activation.slope",
                            format!("the leaky-ReLU slope must be finite, got {slope}; PyTorch's default is 0.01"),
                        ));
                    }
                    Ok(Activation::LeakyRelu { slope })
                }
                "prelu" => {
                    let init = t.init.unwrap_or(Activation::DEFAULT_PRELU_INIT);
                    if !init.is_finite() {
                        return Err(Error::config(
                            file,
                            "model.activation.init",
                            format!("the initial PReLU slope must be finite, got {init}; PyTorch's default is 0.25"),
                        ));
                    }
                    Ok(Activation::Prelu { init })
                }
                "relu" => Ok(Activation::Relu),
                "sigmoid" => Ok(Activation::Sigmoid),
                _ => {
                    let (Some(b), Some(c)) = (&t.breakpoints, &t.coefficients) else {
                        let key = if t.breakpoints.is_none() {
                            "breakpoints"
                        } else {
                            "coefficients"
                        };
                        return Err(Error::config(
                            file,
                            &format!("{FIELD}.{key}"),
                            format!("`{FIELD}.{key}` is required for a piecewise activation: `breakpoints` b_1 < … < b_K split R into K + 1 pieces, `coefficients` gives each piece's polynomial in increasing powers, e.g. breakpoints = [-1.0, 1.0], coefficients = [[-0.5], [0.0, 0.5], [0.5]]"),
                        ));
                    };
                    PiecewisePolynomial::new(b.clone(), c.clone())
                        .map(Activation::Piecewise)
                        .map_err(|e| Error::config(file, FIELD, e.to_string()))
                }
            }
        }
    }
}

fn parse_init(i: &NameOrTable<RawInitTable>, file: &Path) -> Result<InitScheme> {
    const FIELD: &str = "model.init";
    let (kind, std) = match i {
        NameOrTable::Name(name) => (name.as_str(), None),
        NameOrTable::Table(t) => (t.kind.as_str(), Some(t.std)),
    };
    let scheme = match kind {
        "torch" => InitScheme::Torch,
        "kaiming-normal" => InitScheme::KaimingNormal,
        "normal" => match std {
            None => {
                return Err(Error::config(
                    file,
                    FIELD,
                    "init `normal` needs a standard deviation; write it as a table: init = { kind = \"normal\", std = 0.1 }",
                ))
            }
            Some(None) => {
                return Err(Error::config(
                    file,
                    "model.init.std",
                    "`model.init.std` is required for init kind `normal`, e.g. init = { kind = \"normal\", std = 0.1 }",
                ))
            }
            Some(Some(s)) if !(s.is_finite() && s > 0.0) => {
                return Err(Error::config(
                    file,
                    "model.init.std",
                    format!("`model.init.std` = {s} must be positive and finite, e.g. std = 0.1"),
                ))
            }
            Some(Some(s)) => InitScheme::Normal { std: s },
        },
        other => {
            return Err(Error::config(
                file,
                FIELD,
                format!("unknown init `{other}`; available: torch (PyTorch's nn.Linear default), kaiming-normal, {{ kind = \"normal\", std = … }}"),
            ))
        }
    };
    if let (Some(Some(_)), false) = (std, matches!(scheme, InitScheme::Normal { .. })) {
        return Err(Error::config(
            file,
            "model.init.std",
            format!("`model.init.std` is only used by init kind `normal`; remove it for `{kind}`"),
        ));
    }
    Ok(scheme)
}

// ---------------------------------------------------------------------------------------------
// Locating fields in the document, for error messages.
// ---------------------------------------------------------------------------------------------

type Span = std::ops::Range<usize>;

fn span_within(inner: &Span, outer: &Span) -> bool {
    if inner.is_empty() {
        outer.start < inner.start && inner.start < outer.end
    } else {
        outer.start <= inner.start && inner.end <= outer.end
    }
}

/// The dotted path of the deepest key whose key or value covers `target`.
fn deepest_key(
    table: &toml::de::DeTable<'_>,
    target: &Span,
    prefix: &mut Vec<String>,
    best: &mut Vec<String>,
) {
    for (key, value) in table.iter() {
        prefix.push(key.get_ref().to_string());
        if (span_within(target, &key.span()) || span_within(target, &value.span()))
            && prefix.len() > best.len()
        {
            best.clone_from(prefix);
        }
        if let toml::de::DeValue::Table(t) = value.get_ref() {
            deepest_key(t, target, prefix, best);
        }
        prefix.pop();
    }
}

/// The field a TOML deserialisation error is about: the key at the error's position, plus the
/// missing key for "missing field" errors; "(syntax)" when nothing can be found.
fn toml_error_field(doc: &toml::de::DeTable<'_>, e: &toml::de::Error) -> String {
    let mut path = Vec::new();
    if let Some(span) = e.span() {
        deepest_key(doc, &span, &mut Vec::new(), &mut path);
    }
    let msg = e.message();
    if let Some(rest) = msg.strip_prefix("missing field `") {
        if let Some(name) = rest.split('`').next() {
            path.push(name.to_string());
        }
    }
    if path.is_empty() {
        "(syntax)".to_string()
    } else {
        path.join(".")
    }
}

/// Where `field` is in the document: the 1-based line of its key and the dotted path found there,
/// which is `field` itself or, for a missing key, its deepest existing parent.
fn locate_field(text: &str, doc: &toml::de::DeTable<'_>, field: &str) -> Option<(usize, String)> {
    let mut table = Some(doc);
    let mut found: Vec<&str> = Vec::new();
    let mut span = None;
    for part in field.split('.') {
        let Some((key, value)) =
            table.and_then(|t| t.iter().find(|(k, _)| k.get_ref().as_ref() == part))
        else {
            break;
        };
        found.push(part);
        span = Some(key.span());
        table = match value.get_ref() {
            toml::de::DeValue::Table(t) => Some(t),
            _ => None,
        };
    }
    let start = span?.start.min(text.len());
    let line = text[..start].bytes().filter(|&b| b == b'\n').count() + 1;
    Some((line, found.join(".")))
}

// ---------------------------------------------------------------------------------------------
// Writing TOML values.
// ---------------------------------------------------------------------------------------------

/// A float in a form TOML reads back to the same value.
fn toml_float(x: f64) -> String {
    if x.is_nan() {
        "nan".into()
    } else if x.is_infinite() {
        if x > 0.0 { "inf" } else { "-inf" }.into()
    } else {
        // `{:?}` is the shortest representation that round-trips, always with a `.` or an `e`.
        format!("{x:?}")
    }
}

fn toml_floats(xs: &[f64]) -> String {
    let items: Vec<String> = xs.iter().map(|&x| toml_float(x)).collect();
    format!("[{}]", items.join(", "))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_path(p: &Path) -> String {
    toml_str(&p.to_string_lossy())
}

fn activation_toml(a: &Activation) -> String {
    match a {
        Activation::LeakyRelu { slope } => {
            format!(
                "{{ kind = \"leaky-relu\", slope = {} }}",
                toml_float(*slope)
            )
        }
        Activation::Prelu { init } => {
            format!("{{ kind = \"prelu\", init = {} }}", toml_float(*init))
        }
        Activation::Relu => "{ kind = \"relu\" }".into(),
        Activation::Sigmoid => "{ kind = \"sigmoid\" }".into(),
        Activation::Piecewise(p) => {
            let coefficients: Vec<String> = p.coefficients.iter().map(|c| toml_floats(c)).collect();
            format!(
                "{{ kind = \"piecewise\", breakpoints = {}, coefficients = [{}] }}",
                toml_floats(&p.breakpoints),
                coefficients.join(", ")
            )
        }
    }
}

fn init_toml(i: &InitScheme) -> String {
    match i {
        InitScheme::Torch => "\"torch\"".into(),
        InitScheme::KaimingNormal => "\"kaiming-normal\"".into(),
        InitScheme::Normal { std } => {
            format!("{{ kind = \"normal\", std = {} }}", toml_float(*std))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[data]
kind = "ball"
n = 20
d = 4
m = 2
[model]
preset = "dnn"
hidden = [8, 8]
"#;

    fn parse(text: &str) -> Result<Config> {
        Config::from_str(text, Path::new("test.toml"), Path::new("/base"))
    }

    /// (field, message) of a config error; panics on success or on another error kind.
    fn fail(text: &str) -> (String, String) {
        match parse(text) {
            Err(Error::Config {
                file,
                field,
                message,
            }) => {
                assert_eq!(file, "test.toml");
                (field, message)
            }
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn with_model(model: &str) -> String {
        format!("[data]\nkind = \"ball\"\nn = 20\nd = 4\nm = 2\n[model]\n{model}\n")
    }

    #[test]
    fn defaults_filled() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.seed, 0);
        assert_eq!(c.data, DataConfig::Ball { n: 20, d: 4, m: 2 });
        assert_eq!(c.graph, None);
        assert_eq!(c.model.preset, Preset::Dnn);
        assert_eq!(c.model.hidden, vec![8, 8]);
        assert_eq!(c.model.depth, 0);
        assert_eq!(c.model.activation, Activation::LeakyRelu { slope: 0.01 });
        assert_eq!(c.model.init, InitScheme::Torch);
        assert_eq!(c.train, TrainConfig::default());
        assert_eq!(c.train.solver, Solver::Gd);
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.train.epochs, 1000);
        assert_eq!(c.train.loss, LossKind::Mse);
        assert_eq!(c.train.precision, Precision::F64);
        assert_eq!(c.train.log_every, 1);
        assert_eq!(
            c.ntk,
            NtkConfig {
                every: 0,
                memory_budget_gb: 8.0,
                enabled: true
            }
        );
        assert_eq!(c.base_dir, PathBuf::from("/base"));
    }

    #[test]
    fn gcn_gets_default_knn_graph() {
        let c = parse(&with_model("preset = \"gcn\"\nhidden = [4]")).unwrap();
        assert_eq!(c.graph, Some(GraphConfig::Knn { k: DEFAULT_K }));
        let c = parse(&format!(
            "{}[graph]\nedges = \"e.csv\"\n",
            with_model("preset = \"gcn\"\nhidden = [4]")
        ))
        .unwrap();
        assert_eq!(
            c.graph,
            Some(GraphConfig::Edges {
                path: PathBuf::from("/base/e.csv")
            })
        );
    }

    #[test]
    fn misspelt_key_is_named() {
        let (field, message) = fail(&with_model("preset = \"dnn\"\nhiden = [8]"));
        assert_eq!(field, "model.hiden");
        assert!(message.contains("unknown field `hiden`"), "{message}");
        assert!(message.contains("line 8"), "{message}");
        let (field, _) = fail(&format!("{MINIMAL}[train]\nepoch = 3\n"));
        assert_eq!(field, "train.epoch");
        let (field, _) = fail(&format!("{MINIMAL}[tran]\nepochs = 3\n"));
        assert_eq!(field, "tran");
    }

    #[test]
    fn syntax_and_type_errors() {
        let (field, message) = fail("[data\nkind = \"ball\"\n");
        assert_eq!(field, "(syntax)");
        assert!(message.contains("line 1"), "{message}");
        let (field, _) = fail(&format!("{MINIMAL}[train]\nlr = \"fast\"\n"));
        assert_eq!(field, "train.lr");
        let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = [8, -1]"));
        assert_eq!(field, "model.hidden");
        let (field, _) = fail("seed = 1\n[model]\npreset = \"dnn\"\nhidden = [3]\n");
        assert_eq!(field, "data");
        let (field, _) = fail("[data]\nn = 3\n[model]\npreset = \"dnn\"\nhidden = [3]\n");
        assert_eq!(field, "data.kind");
        let (field, message) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [3]\nactivation = { kind = \"leaky-relu\", slop = 0.1 }",
        ));
        assert_eq!(field, "model.activation.slop");
        assert!(message.contains("unknown field `slop`"), "{message}");
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [3]\nactivation = 3",
        ));
        assert_eq!(field, "model.activation");
    }

    #[test]
    fn missing_data_n_is_named() {
        let (field, message) = fail(
            "[data]\nkind = \"ball\"\nd = 4\nm = 2\n[model]\npreset = \"dnn\"\nhidden = [8]\n",
        );
        assert_eq!(field, "data.n");
        assert!(message.contains("required"), "{message}");
        assert!(message.contains("(in `data` at line 1)"), "{message}");
        let (field, _) = fail(&MINIMAL.replace("d = 4", "d = 0"));
        assert_eq!(field, "data.d");
        let (field, _) = fail(&MINIMAL.replace("m = 2", "m = 2\nx = \"x.npy\""));
        assert_eq!(field, "data.x");
    }

    #[test]
    fn npy_paths_resolved() {
        let text = "[data]\nkind = \"npy\"\nx = \"data/x.npy\"\ny = \"/abs/y.npy\"\n[model]\npreset = \"dnn\"\nhidden = [3]\n";
        let c = parse(text).unwrap();
        assert_eq!(
            c.data,
            DataConfig::Npy {
                x: PathBuf::from("/base/data/x.npy"),
                y: PathBuf::from("/abs/y.npy")
            }
        );
        let (field, _) = fail(&text.replace("x = \"data/x.npy\"\n", ""));
        assert_eq!(field, "data.x");
        let (field, _) = fail(&text.replace("kind = \"npy\"", "kind = \"npy\"\nn = 3"));
        assert_eq!(field, "data.n");
    }

    #[test]
    fn bad_lr_is_named() {
        for lr in ["0", "-1", "0.0", "nan", "inf"] {
            let (field, message) = fail(&format!("{MINIMAL}[train]\nlr = {lr}\n"));
            assert_eq!(field, "train.lr", "lr = {lr}");
            assert!(message.contains("step must be positive"), "{message}");
        }
        // An integer step is accepted as a float.
        let c = parse(&format!("{MINIMAL}[train]\nlr = 1\nepochs = 0\n")).unwrap();
        assert_eq!((c.train.lr, c.train.epochs), (1.0, 0));
    }

    #[test]
    fn unused_keys_are_errors() {
        let (field, message) = fail(&with_model("preset = \"dnn\"\nhidden = [8]\ndepth = 3"));
        assert_eq!(field, "model.depth");
        assert!(
            message.contains("only used by preset resnet; remove it"),
            "{message}"
        );
        let (field, _) = fail(&with_model("preset = \"resnet\"\nhidden = [8]\ndepth = 3"));
        assert_eq!(field, "model.hidden");
        let (field, message) = fail(&format!("{MINIMAL}[graph]\nk = 3\n"));
        assert_eq!(field, "graph");
        assert!(message.contains("remove it"), "{message}");
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"relu\", slope = 0.1 }",
        ));
        assert_eq!(field, "model.activation.slope");
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\ninit = { kind = \"torch\", std = 0.1 }",
        ));
        assert_eq!(field, "model.init.std");
    }

    #[test]
    fn preset_choices() {
        let (field, message) = fail(&with_model("preset = \"cnn\"\nhidden = [8]"));
        assert_eq!(field, "model.preset");
        assert!(
            message.contains("preset `cnn` is not available yet; available: dnn, resnet, gcn"),
            "{message}"
        );
        let (field, message) = fail(&with_model("preset = \"mlp\"\nhidden = [8]"));
        assert_eq!(field, "model.preset");
        assert!(message.contains("available: dnn, resnet, gcn"), "{message}");
        let c = parse(&with_model("preset = \"resnet\"\ndepth = 3")).unwrap();
        assert_eq!(
            (c.model.preset, c.model.depth, c.model.hidden.len()),
            (Preset::Resnet, 3, 0)
        );
        let (field, _) = fail(&with_model("preset = \"resnet\""));
        assert_eq!(field, "model.depth");
        let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = []"));
        assert_eq!(field, "model.hidden");
        let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = [3, 0]"));
        assert_eq!(field, "model.hidden");
    }

    #[test]
    fn graph_checks() {
        let gcn = "[data]\nkind = \"ball\"\nn = 5\nd = 4\nm = 2\n[model]\npreset = \"gcn\"\nhidden = [4]\n";
        let (field, message) = fail(gcn);
        assert_eq!(field, "graph.k");
        assert!(
            message.contains("`graph.k` = 10 must be smaller than `data.n` = 5"),
            "{message}"
        );
        assert_eq!(
            parse(&format!("{gcn}[graph]\nk = 2\n")).unwrap().graph,
            Some(GraphConfig::Knn { k: 2 })
        );
        let (field, _) = fail(&format!("{gcn}[graph]\nk = 2\nedges = \"e.csv\"\n"));
        assert_eq!(field, "graph");
        let (field, _) = fail(&format!("{gcn}[graph]\nk = 0\n"));
        assert_eq!(field, "graph.k");
    }

    #[test]
    fn train_and_ntk_checks() {
        let (field, message) = fail(&format!("{MINIMAL}[train]\nsolver = \"flow\"\n"));
        assert_eq!(field, "train.solver");
        assert!(
            message.contains("not available yet; use \"gd\""),
            "{message}"
        );
        let (field, message) = fail(&format!("{MINIMAL}[train]\nprecision = \"f32\"\n"));
        assert_eq!(field, "train.precision");
        assert!(message.contains("not available yet"), "{message}");
        let (field, _) = fail(&format!("{MINIMAL}[train]\nloss = \"l1\"\n"));
        assert_eq!(field, "train.loss");
        let (field, _) = fail(&format!("{MINIMAL}[train]\nlog_every = 0\n"));
        assert_eq!(field, "train.log_every");
        let (field, _) = fail(&format!("{MINIMAL}[ntk]\nmemory_budget_gb = 0\n"));
        assert_eq!(field, "ntk.memory_budget_gb");
        let c = parse(&format!(
            "{MINIMAL}[train]\nloss = \"half-sse\"\n[ntk]\nevery = 5\nenabled = false\n"
        ))
        .unwrap();
        assert_eq!(c.train.loss, LossKind::HalfSse);
        assert_eq!((c.ntk.every, c.ntk.enabled), (5, false));
    }

    #[test]
    fn activation_forms() {
        let act = |a: &str| {
            parse(&with_model(&format!(
                "preset = \"dnn\"\nhidden = [8]\nactivation = {a}"
            )))
            .unwrap()
            .model
            .activation
        };
        assert_eq!(act("\"leaky-relu\""), Activation::LeakyRelu { slope: 0.01 });
        assert_eq!(act("\"prelu\""), Activation::Prelu { init: 0.25 });
        assert_eq!(act("\"relu\""), Activation::Relu);
        assert_eq!(act("\"sigmoid\""), Activation::Sigmoid);
        assert_eq!(
            act("{ kind = \"leaky-relu\", slope = 0.2 }"),
            Activation::LeakyRelu { slope: 0.2 }
        );
        assert_eq!(
            act("{ kind = \"leaky-relu\" }"),
            Activation::LeakyRelu { slope: 0.01 }
        );
        assert_eq!(
            act("{ kind = \"prelu\", init = 0.1 }"),
            Activation::Prelu { init: 0.1 }
        );
        assert_eq!(act("{ kind = \"relu\" }"), Activation::Relu);
        assert_eq!(
            act("{ kind = \"piecewise\", breakpoints = [0.0], coefficients = [[0.0, 0.1], [0.0, 1.0, 1.0]] }"),
            Activation::Piecewise(PiecewisePolynomial {
                breakpoints: vec![0.0],
                coefficients: vec![vec![0.0, 0.1], vec![0.0, 1.0, 1.0]],
            })
        );
        // The sub-table form works as well as the inline one.
        let c = parse(&format!(
            "{MINIMAL}[model.activation]\nkind = \"leaky-relu\"\nslope = 0.3\n"
        ))
        .unwrap();
        assert_eq!(c.model.activation, Activation::LeakyRelu { slope: 0.3 });
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\nactivation = \"tanh\"",
        ));
        assert_eq!(field, "model.activation");
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"leaky-relu\", slope = nan }",
        ));
        assert_eq!(field, "model.activation.slope");
    }

    #[test]
    fn init_forms() {
        let init = |i: &str| {
            parse(&with_model(&format!(
                "preset = \"dnn\"\nhidden = [8]\ninit = {i}"
            )))
        };
        assert_eq!(
            init("\"kaiming-normal\"").unwrap().model.init,
            InitScheme::KaimingNormal
        );
        assert_eq!(
            init("{ kind = \"normal\", std = 0.1 }").unwrap().model.init,
            InitScheme::Normal { std: 0.1 }
        );
        for bad in [
            "{ kind = \"normal\", std = 0.0 }",
            "{ kind = \"normal\", std = -1.0 }",
        ] {
            match init(bad) {
                Err(Error::Config { field, .. }) => assert_eq!(field, "model.init.std"),
                other => panic!("{other:?}"),
            }
        }
        match init("\"normal\"") {
            Err(Error::Config { field, .. }) => assert_eq!(field, "model.init"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn discontinuous_piecewise_is_named() {
        let (field, message) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"piecewise\", breakpoints = [0.0], coefficients = [[1.0], [0.0, 1.0]] }",
        ));
        assert_eq!(field, "model.activation");
        assert!(message.contains("discontinuous"), "{message}");
        let (field, _) = fail(&with_model(
            "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"piecewise\", breakpoints = [0.0] }",
        ));
        assert_eq!(field, "model.activation.coefficients");
    }

    #[test]
    fn to_toml_round_trip() {
        let base = Path::new("/base");
        let texts = [
            MINIMAL.to_string(),
            format!(
                "seed = 7\n{}[graph]\nk = 3\n[train]\nlr = 0.1\nepochs = 5\nloss = \"half-sse\"\n[ntk]\nevery = 2\nmemory_budget_gb = 0.5\nenabled = false\n",
                with_model("preset = \"gcn\"\nhidden = [4, 5]\nactivation = { kind = \"piecewise\", breakpoints = [-1.0, 1.0], coefficients = [[-0.5], [0.0, 0.5], [0.5]] }\ninit = { kind = \"normal\", std = 0.3 }")
            ),
            format!("{}[graph]\nedges = \"g/e.csv\"\n", with_model("preset = \"gcn\"\nhidden = [4]\nactivation = \"prelu\"")),
            with_model("preset = \"resnet\"\ndepth = 2\nactivation = \"sigmoid\"\ninit = \"kaiming-normal\""),
            "[data]\nkind = \"npy\"\nx = \"x.npy\"\ny = \"sub dir/y \\\"q\\\".npy\"\n[model]\npreset = \"dnn\"\nhidden = [3]\nactivation = \"relu\"\n[train]\nlr = 1e-7\n".to_string(),
        ];
        for text in texts {
            let c = parse(&text).unwrap();
            let out = c.to_toml();
            let back = Config::from_str(&out, Path::new("resolved.toml"), base)
                .unwrap_or_else(|e| panic!("{e}\n{out}"));
            let back = Config {
                source: c.source.clone(),
                ..back
            };
            assert_eq!(back, c, "{out}");
            assert!(out.contains("activation = { kind = "), "{out}");
        }
    }

    #[test]
    fn examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.extension().is_some_and(|e| e == "toml") && name != "dnn_npy.toml" {
                let c = Config::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
                let back = Config::from_str(&c.to_toml(), &path, &c.base_dir).unwrap();
                assert_eq!(back, c, "{name}");
                seen += 1;
            }
        }
        assert!(
            seen >= 4,
            "expected the example configs in {}",
            dir.display()
        );
        // dnn_npy only needs its data files; the config itself must be valid.
        let c = Config::from_path(&dir.join("dnn_npy.toml")).unwrap();
        assert!(matches!(c.data, DataConfig::Npy { .. }));
    }
}
