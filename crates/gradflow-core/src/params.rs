//! θ ⇄ named tensors: the flat parameter vector split into the model's named tensors (for
//! safetensors files that PyTorch loads with `load_state_dict`), and back, with errors that say
//! which tensor is missing, extra or misshapen.

use crate::error::{Error, Result};
use crate::io::safetensors::NamedTensor;
use crate::layers::ParamSpec;
use std::collections::BTreeMap;
use std::path::Path;

/// Splits θ into the named tensors of `specs` (in order).
pub fn to_tensors(specs: &[ParamSpec], theta: &[f64]) -> Vec<NamedTensor> {
    let mut out = Vec::with_capacity(specs.len());
    let mut at = 0;
    for s in specs {
        out.push(NamedTensor {
            name: s.name.clone(),
            shape: s.shape.clone(),
            data: theta[at..at + s.len()].to_vec(),
        });
        at += s.len();
    }
    out
}

/// Reassembles θ from named tensors; every spec must be present with its exact shape, and no
/// other tensor may be there. `source` names the file in errors.
pub fn from_tensors(
    specs: &[ParamSpec],
    tensors: Vec<NamedTensor>,
    source: &Path,
) -> Result<Vec<f64>> {
    let mut by_name: BTreeMap<String, NamedTensor> =
        tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
    let mut theta = Vec::with_capacity(specs.iter().map(ParamSpec::len).sum());
    for s in specs {
        let t = by_name.remove(&s.name).ok_or_else(|| {
            Error::input(
                source,
                format!(
                    "tensor `{}` (shape {:?}) is missing: the file does not hold parameters of this model \
                     (check the config's preset and widths)",
                    s.name, s.shape
                ),
            )
        })?;
        if t.shape != s.shape {
            return Err(Error::input(
                source,
                format!(
                    "tensor `{}` has shape {:?} but the model needs {:?}",
                    s.name, t.shape, s.shape
                ),
            ));
        }
        if let Some(k) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(Error::input(
                source,
                format!(
                    "tensor `{}` holds a non-finite value at flat index {k}",
                    s.name
                ),
            ));
        }
        theta.extend_from_slice(&t.data);
    }
    if let Some(extra) = by_name.keys().next() {
        return Err(Error::input(
            source,
            format!(
                "tensor `{extra}` is not a parameter of this model ({} extra tensors)",
                by_name.len()
            ),
        ));
    }
    Ok(theta)
}

/// Saves θ as safetensors (f64) with the given metadata.
pub fn save(
    path: &Path,
    specs: &[ParamSpec],
    theta: &[f64],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    crate::io::safetensors::write_tensors(path, &to_tensors(specs, theta), metadata)
}

/// Loads θ for a model with tensors `specs` from a safetensors file (f64 or f32).
pub fn load(path: &Path, specs: &[ParamSpec]) -> Result<Vec<f64>> {
    from_tensors(specs, crate::io::safetensors::read_tensors(path)?, path)
}
