//! Which entry of a layer list a deserialisation error is about. serde reads a `kind`-tagged
//! entry as a whole, so an unknown key three levels down is reported at the top entry; this
//! walks the document again, entry by entry, and returns the innermost entry that does not
//! read as a [`LayerSpec`] on its own, with serde's message for it.

use super::LayerSpec;
use serde::Deserialize;
use serde_json::Value;

/// The innermost bad entry of the list `layers` written at `path` (`model.layers`), as
/// (field path, message); None when every entry reads.
pub(crate) fn first_bad_layer(layers: &Value, path: &str) -> Option<(String, String)> {
    let Value::Array(items) = layers else {
        return Some((
            path.to_string(),
            "must be a list of layers, each a table with a `kind` key".into(),
        ));
    };
    items
        .iter()
        .enumerate()
        .find_map(|(i, v)| bad_entry(v, &format!("{path}[{i}]")))
}

fn bad_entry(v: &Value, path: &str) -> Option<(String, String)> {
    let err = LayerSpec::deserialize(v).err()?;
    // A composite whose own keys are fine but a nested entry is not: report the nested one.
    let nested: Vec<(String, &Value)> = match (v.get("kind").and_then(Value::as_str), v) {
        (Some("residual"), _) => v.get("layers").map(|l| vec![("layers".into(), l)]),
        (Some("shared-pair"), _) => v.get("tower").map(|l| vec![("tower".into(), l)]),
        (Some("concat"), _) => match v.get("branches") {
            Some(Value::Array(bs)) => Some(
                bs.iter()
                    .enumerate()
                    .map(|(b, l)| (format!("branches[{b}]"), l))
                    .collect(),
            ),
            _ => None,
        },
        _ => None,
    }
    .unwrap_or_default();
    for (key, list) in nested {
        if let Value::Array(items) = list {
            for (i, item) in items.iter().enumerate() {
                if let Some(found) = bad_entry(item, &format!("{path}.{key}[{i}]")) {
                    return Some(found);
                }
            }
        }
    }
    Some((path.to_string(), err.to_string()))
}
