//! The network a witness describes: which presets a witness script can rebuild, the model's
//! description for `claim.json` — checked against the model itself (same tensors, bit-identical
//! outputs at θ) — and a gcn's propagation matrix.

use super::WITNESS_PRESETS;
use crate::activation::Activation;
use crate::batch::Batch;
use crate::config::{ModelConfig, ModelSpec, Preset};
use crate::error::{Error, Result};
use crate::graph::SparseMatrix;
use crate::layers::{GraphStructure, Layer, Structure};
use crate::model::Model;
use crate::presets;
use std::sync::Arc;

/// The preset of `config` when a witness script can rebuild it ([`WITNESS_PRESETS`]).
pub(super) fn witness_preset(config: &ModelConfig) -> Result<Preset> {
    match config.preset() {
        Some(p) if WITNESS_PRESETS.contains(&p) => Ok(p),
        _ => Err(no_witness_script(config)),
    }
}

fn no_witness_script(config: &ModelConfig) -> Error {
    Error::Invalid(format!(
        "no witness script for {}: witnesses exist for presets {} only (write the numbers alone)",
        config.label(),
        WITNESS_PRESETS.map(|p| p.name()).join(", ")
    ))
}

/// The model's description for `claim.json`, after checking that `model` is the preset `config`
/// describes (same tensors, bit-identical outputs at θ on x) and that the witness script can
/// rebuild it.
pub(super) fn describe_model(
    preset: Preset,
    config: &ModelConfig,
    model: &Model,
    theta: &[f64],
    x: &Batch,
) -> Result<serde_json::Value> {
    let activation = match config.activation {
        Activation::LeakyRelu { slope } => serde_json::json!({ "kind": "leaky-relu", "slope": slope }),
        Activation::Relu => serde_json::json!({ "kind": "relu" }),
        ref other => {
            return Err(Error::Invalid(format!(
                "no witness script for activation {other}: witnesses support leaky-relu (any slope) and relu only (write the numbers alone)"
            )))
        }
    };
    let mismatch = |what: String| {
        Error::Invalid(format!(
            "cannot write a witness: the model is not the {preset} its config describes ({what})"
        ))
    };
    if model.preset != Some(preset) {
        return Err(mismatch(format!(
            "the model was built as `{}`",
            model.preset_name()
        )));
    }
    if model.activation != config.activation {
        return Err(mismatch(format!("its activation is {}", model.activation)));
    }
    if theta.len() != model.p() {
        return Err(Error::Invalid(format!(
            "cannot write a witness: θ has {} entries but the model has p = {}",
            theta.len(),
            model.p()
        )));
    }
    if x.features() != model.in_dim() || x.n() == 0 {
        return Err(Error::Invalid(format!(
            "cannot write a witness: the inputs are {} × {} (n × d) but the model takes d = {}",
            x.n(),
            x.features(),
            model.in_dim()
        )));
    }
    let (n, d, m) = (x.n(), x.features(), model.out_dim());
    let act = &config.activation;
    let rebuilt = match config.spec() {
        Some(ModelSpec::Dnn { hidden }) => presets::dnn(d, hidden, m, act),
        Some(ModelSpec::Resnet { depth }) => presets::resnet(d, *depth, m, act),
        Some(ModelSpec::Gcn { hidden }) => {
            presets::gcn(propagation_matrix(model)?, d, hidden, m, act)
        }
        _ => return Err(no_witness_script(config)),
    };
    let spec_list = |model: &Model| -> Vec<(String, Vec<usize>)> {
        model
            .param_specs()
            .into_iter()
            .map(|s| (s.name, s.shape))
            .collect()
    };
    let (found, expected) = (spec_list(model), spec_list(&rebuilt));
    if found != expected {
        return Err(mismatch(format!(
            "its tensors are {found:?}, the config's {preset} has {expected:?}"
        )));
    }
    let outputs = model.outputs(theta, x);
    if !outputs.all_finite() {
        return Err(Error::Invalid(
            "cannot write a witness: the model's outputs at θ are not all finite".into(),
        ));
    }
    if outputs != rebuilt.outputs(theta, x) {
        return Err(mismatch(
            "the same tensors give different outputs at θ".to_string(),
        ));
    }
    let mut description = serde_json::json!({
        "preset": preset.name(),
        "n": n,
        "d": d,
        "m": m,
        "activation": activation,
    });
    let sizes = match config.spec() {
        Some(ModelSpec::Resnet { depth }) => serde_json::json!({
            "depth": depth,
            "definition": "h^0 = x; h^l = h^{l-1} + σ(W^l h^{l-1} + b^l), W^l ∈ R^{d×d}, l = 1..depth; f = W h^depth + b",
        }),
        Some(ModelSpec::Gcn { hidden }) => serde_json::json!({
            "hidden": hidden,
            "graph_adjacency": "graph_adjacency.npy",
            "definition": "H^0 = X (n × d); H^l = σ(Â H^{l-1} W^l + 1 b^lᵀ); F = Â H^{L-1} W^L + 1 b^Lᵀ, Â = D̃^{-1/2}(A + I)D̃^{-1/2}",
        }),
        Some(ModelSpec::Dnn { hidden }) => serde_json::json!({
            "hidden": hidden,
            "definition": "h^0 = x; h^l = σ(W^l h^{l-1} + b^l); f = W^L h^{L-1} + b^L",
        }),
        _ => return Err(no_witness_script(config)),
    };
    let obj = description.as_object_mut().expect("a JSON object");
    obj.extend(sizes.as_object().expect("a JSON object").clone());
    obj.insert(
        "sigma".into(),
        "σ(z) = z for z > 0, slope·z otherwise (relu: slope 0); σ'(0) = slope, as PyTorch".into(),
    );
    Ok(description)
}

/// The propagation matrix Â of a gcn: the one sparse matrix all its propagation layers share.
pub(super) fn propagation_matrix(model: &Model) -> Result<Arc<SparseMatrix>> {
    fn collect(layer: &dyn Layer, out: &mut Vec<Arc<SparseMatrix>>) {
        if let Structure::Graph(GraphStructure::Propagate(a)) = layer.structure() {
            out.push(a);
        }
        for child in layer.children() {
            collect(child, out);
        }
    }
    let mut found = Vec::new();
    collect(model.net.as_ref(), &mut found);
    let Some(first) = found.first().cloned() else {
        return Err(Error::Invalid(
            "cannot write a witness: the gcn has no graph propagation layer".into(),
        ));
    };
    if found.iter().any(|a| **a != *first) {
        return Err(Error::Invalid(
            "cannot write a witness: the gcn's propagation layers use different matrices".into(),
        ));
    }
    Ok(first)
}
