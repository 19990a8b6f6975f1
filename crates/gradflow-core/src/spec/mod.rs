//! User-defined architectures: a model written as a list of layers ([`LayerSpec`]) instead of a
//! preset, in TOML (`[[model.layers]]`, read by `crate::config`) or as a JSON document / Python
//! dict ([`model_from_json`]). The contract shared with the Python bindings is
//! docs/layer-spec.md; in short, each entry is a table tagged by `kind`:
//!
//! ```toml
//! [[model.layers]]
//! kind = "conv2d"        # out, kernel, stride = 1, padding = 0, groups = 1, bias = true
//! out = 8
//! kernel = 3
//! padding = 1
//! [[model.layers]]
//! kind = "activation"    # optional activation = … (default: model.activation)
//! [[model.layers]]
//! kind = "flatten"       # images → vectors (a shape change, no layer)
//! [[model.layers]]
//! kind = "dense"         # out, bias = true
//! out = 3
//! ```
//!
//! [`build`] infers every shape from the input (a vector or a C×H×W image), checks each entry
//! against it, and assembles the same layer objects the presets use, so a list equal to a
//! preset builds a bit-for-bit identical model. Parameters are named like PyTorch's module
//! paths (`layers.0.weight`, or `<name>.weight` for an entry with `name`), see
//! [`crate::model::Model::param_index`].

mod build;
mod locate;

pub use build::{build_layers, check_layers, BuiltLayers, GraphOperators, Shape, SpecSite};
pub(crate) use locate::first_bad_layer;

use crate::activation::Activation;
use crate::config::{NameOrTable, RawActivationTable, RawInitTable};
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::init::{init_params, InitScheme};
use crate::model::Model;
use serde::{Deserialize, Serialize};
use std::path::Path;

fn yes() -> bool {
    true
}
fn one() -> usize {
    1
}
fn is_true(b: &bool) -> bool {
    *b
}
fn is_one(v: &usize) -> bool {
    *v == 1
}
fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// One entry of a layer list, tagged by `kind` (see the module documentation). Every entry may
/// carry `name`, the prefix of its parameters' names (default: its index path).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LayerSpec {
    /// `nn.Linear(in, out, bias)` on vectors.
    Dense {
        out: usize,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `nn.Conv2d(in, out, kernel, stride, padding, groups=groups, bias=bias)` on images.
    Conv2d {
        out: usize,
        kernel: usize,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        stride: usize,
        #[serde(default, skip_serializing_if = "is_zero")]
        padding: usize,
        #[serde(default = "one", skip_serializing_if = "is_one")]
        groups: usize,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        bias: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// An element-wise σ; `activation` defaults to the model's.
    Activation {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        activation: Option<NameOrTable<RawActivationTable>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `nn.AvgPool2d(kernel, stride)`, stride defaulting to kernel.
    #[serde(rename = "avgpool2d")]
    AvgPool2d {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `nn.MaxPool2d(kernel, stride)`, stride defaulting to kernel.
    #[serde(rename = "maxpool2d")]
    MaxPool2d {
        kernel: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stride: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Images (C, H, W, row-major) → vectors: only the shape changes, no layer is added.
    Flatten {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// `nn.Upsample(scale_factor=factor, mode="nearest")`.
    Upsample {
        factor: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// x + f(x), f the nested list (same output shape as input).
    Residual {
        layers: Vec<LayerSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Every branch (a nested list; empty = the identity) on the same input, outputs
    /// concatenated: features of vectors, channels of images (`torch.cat(dim=1)`).
    Concat {
        branches: Vec<Vec<LayerSpec>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// H ← Â H on the samples' graph (needs a `[graph]` section).
    Propagate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// GraphConv h' = W₁h + W₂Σ_{j∈N(i)} h_j + b (as the graphconv preset).
    #[serde(rename = "graphconv")]
    GraphConv {
        out: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// ChebConv of order K (default 3) on the scaled Laplacian (as the cheb preset).
    Cheb {
        out: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A Siamese pair on x = [a; b]: the tower (shared parameters) on both halves, combined by
    /// "abs-diff" (default) or "concat". Only as the first layer.
    SharedPair {
        tower: Vec<LayerSpec>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        combine: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
}

impl LayerSpec {
    /// The `kind` this entry was written with.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Dense { .. } => "dense",
            Self::Conv2d { .. } => "conv2d",
            Self::Activation { .. } => "activation",
            Self::AvgPool2d { .. } => "avgpool2d",
            Self::MaxPool2d { .. } => "maxpool2d",
            Self::Flatten { .. } => "flatten",
            Self::Upsample { .. } => "upsample",
            Self::Residual { .. } => "residual",
            Self::Concat { .. } => "concat",
            Self::Propagate { .. } => "propagate",
            Self::GraphConv { .. } => "graphconv",
            Self::Cheb { .. } => "cheb",
            Self::SharedPair { .. } => "shared-pair",
        }
    }
    /// The entry's `name`, when given.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Dense { name, .. }
            | Self::Conv2d { name, .. }
            | Self::Activation { name, .. }
            | Self::AvgPool2d { name, .. }
            | Self::MaxPool2d { name, .. }
            | Self::Flatten { name }
            | Self::Upsample { name, .. }
            | Self::Residual { name, .. }
            | Self::Concat { name, .. }
            | Self::Propagate { name }
            | Self::GraphConv { name, .. }
            | Self::Cheb { name, .. }
            | Self::SharedPair { name, .. } => name.as_deref(),
        }
    }
    /// The nested lists of a composite entry, with their key as written (`layers`,
    /// `branches[b]`, `tower`).
    pub fn nested(&self) -> Vec<(String, &[LayerSpec])> {
        match self {
            Self::Residual { layers, .. } => vec![("layers".into(), layers.as_slice())],
            Self::Concat { branches, .. } => branches
                .iter()
                .enumerate()
                .map(|(b, l)| (format!("branches[{b}]"), l.as_slice()))
                .collect(),
            Self::SharedPair { tower, .. } => vec![("tower".into(), tower.as_slice())],
            _ => Vec::new(),
        }
    }
    /// True when this entry or one nested in it works on the samples' graph.
    pub fn uses_graph(&self) -> bool {
        matches!(
            self,
            Self::Propagate { .. } | Self::GraphConv { .. } | Self::Cheb { .. }
        ) || self
            .nested()
            .iter()
            .any(|(_, l)| l.iter().any(LayerSpec::uses_graph))
    }
}

/// The input of a layer list: `d` (vectors) or `[C, H, W]` (images).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum InputSpec {
    Vector(usize),
    Image([usize; 3]),
}

impl InputSpec {
    pub fn shape(&self) -> Shape {
        match *self {
            Self::Vector(d) => Shape::Vector(d),
            Self::Image([c, h, w]) => Shape::Image(crate::layers::ImageShape::new(c, h, w)),
        }
    }
}

/// The JSON / dict form of a layer-list model (what Python's `Model.from_spec` passes):
/// `{"activation": …, "init": …, "input": d or [C, H, W], "layers": [ {…}, … ]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpecDocument {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation: Option<NameOrTable<RawActivationTable>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<NameOrTable<RawInitTable>>,
    pub input: InputSpec,
    pub layers: Vec<LayerSpec>,
}

/// A model built from a spec, with the initialisation scheme it asked for.
#[derive(Debug)]
pub struct SpecModel {
    pub model: Model,
    pub init: InitScheme,
}

impl SpecModel {
    /// θ₀ drawn with the spec's initialisation from `seed` (the CLI's `seed`).
    pub fn init_params(&self, seed: u64) -> Vec<f64> {
        init_params(&self.model.param_specs(), &self.init, seed)
    }
}

/// The label errors of [`model_from_json`] carry in place of a file name.
pub const JSON_SOURCE: &str = "model spec";

/// Builds a model from the JSON form of a layer list ([`ModelSpecDocument`]; Python passes
/// `json.dumps(dict)`). `graph` is the samples' graph, needed only by `propagate`, `graphconv`
/// and `cheb` entries. Errors are [`Error::Config`] whose field is the entry's path
/// (`layers[2].layers[1].out`) and whose message gives the fix.
pub fn model_from_json(json: &str, graph: Option<&Graph>) -> Result<SpecModel> {
    let file = Path::new(JSON_SOURCE);
    let doc: ModelSpecDocument = serde_json::from_str(json).map_err(|e| {
        let value: Option<serde_json::Value> = serde_json::from_str(json).ok();
        let field = value
            .as_ref()
            .and_then(|v| v.get("layers"))
            .and_then(|layers| first_bad_layer(layers, "layers"));
        match field {
            Some((field, message)) => Error::config(file, &field, message),
            None => Error::config(file, "(json)", e.to_string()),
        }
    })?;
    let activation = match &doc.activation {
        None => Activation::leaky_relu(),
        Some(a) => crate::config::parse_activation(a, file, "activation")?,
    };
    let init = match &doc.init {
        None => InitScheme::Torch,
        Some(i) => crate::config::parse_init(i, file, "init")?,
    };
    if let InputSpec::Vector(0) | InputSpec::Image([0, _, _] | [_, 0, _] | [_, _, 0]) = doc.input {
        return Err(Error::config(
            file,
            "input",
            "every size of `input` must be at least 1: d for vectors or [C, H, W] for images",
        ));
    }
    let operators = graph.map(GraphOperators::new);
    let site = SpecSite {
        file,
        root: "layers",
    };
    let built = build_layers(
        &doc.layers,
        doc.input.shape(),
        &activation,
        operators.as_ref(),
        &site,
    )?;
    Ok(SpecModel {
        model: built.into_model(activation),
        init,
    })
}
