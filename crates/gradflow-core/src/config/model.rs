//! `[model]`: the preset, its architecture keys (checked against the preset), the activation and
//! the initialisation.

use super::*;
use crate::activation::PiecewisePolynomial;

/// "preset a", "presets a and b", "presets a, b and c".
fn preset_list(presets: &[Preset]) -> String {
    let names: Vec<&str> = presets.iter().map(|p| p.name()).collect();
    match names.as_slice() {
        [one] => format!("preset {one}"),
        [init @ .., last] => format!("presets {} and {last}", init.join(", ")),
        [] => "no preset".to_string(),
    }
}

/// Why `model.{key}` means nothing for `preset`, and what to write instead (with a leading space).
fn unused_hint(key: &str, preset: Preset) -> String {
    let sizes = if preset.uses_key("hidden") {
        "`model.hidden`"
    } else if preset.needs_images() {
        "`model.channels`"
    } else {
        "data.d"
    };
    match key {
        "depth" if preset.uses_key("hidden") => {
            format!(" (the depth of a {preset} is the length of `model.hidden`)")
        }
        "depth" => format!(" (the depth of a {preset} is the length of `model.channels`)"),
        "hidden" if preset == Preset::Resnet => {
            " (a resnet's width is data.d; set the number of blocks with `model.depth`)".into()
        }
        "hidden" | "channels" => format!(" (the widths of a {preset} are {sizes})"),
        "kernel" => format!(" (a {preset} has no convolution kernel)"),
        "order" => " (only Chebyshev convolutions have an order K)".into(),
        "combine" => " (only siamese combines two towers)".into(),
        _ => String::new(),
    }
}

/// The `model.combine` name of `c`.
pub(super) fn combine_name(c: PairCombine) -> &'static str {
    match c {
        PairCombine::AbsDiff => "abs-diff",
        PairCombine::Concat => "concat",
    }
}

/// A list of positive widths, required when `preset` uses `model.{key}`.
fn widths(
    v: &Option<Vec<usize>>,
    key: &str,
    preset: Preset,
    what: &str,
    example: &str,
    err: &impl Fn(&str, String) -> Error,
) -> Result<Vec<usize>> {
    let field = format!("model.{key}");
    let w = match v {
        None => {
            return Err(err(
                &field,
                format!(
                    "`{field}` is required for preset {preset}: {what}, e.g. {key} = {example}"
                ),
            ))
        }
        Some(w) if w.is_empty() => {
            return Err(err(
                &field,
                format!("`{field}` is empty; list at least one width, e.g. {key} = {example}"),
            ))
        }
        Some(w) => w.clone(),
    };
    if let Some(i) = w.iter().position(|&x| x == 0) {
        return Err(err(
            &field,
            format!("width {i} of `{field}` is 0; every width must be at least 1"),
        ));
    }
    Ok(w)
}

/// Resolves `[model]`; the checks against `[data]` are in [`super::validate`].
pub(super) fn resolve_model(m: &RawModel, file_label: &Path) -> Result<ModelConfig> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    let name = match (&m.preset, &m.layers) {
        (Some(_), Some(_)) => {
            return Err(err(
                "model.layers",
                "`model.preset` and `model.layers` are exclusive: a model is either a preset or a list of layers; remove one".into(),
            ))
        }
        (None, None) => {
            return Err(err(
                "model.preset",
                format!(
                    "`model.preset` is required: a preset (available: {}), or instead a list of layers as [[model.layers]] tables with a `kind`, e.g. kind = \"dense\", out = 10",
                    Preset::available()
                ),
            ))
        }
        (None, Some(layers)) => return resolve_layers(m, layers, file_label),
        (Some(name), None) => name,
    };
    if m.input.is_some() {
        return Err(err(
            "model.input",
            "`model.input` is only used with a layer list ([[model.layers]]); a preset takes its input from [data]: remove it".into(),
        ));
    }
    let preset = match Preset::from_name(name) {
        Some(p) => p,
        None if Preset::PLANNED.contains(&name.as_str()) => {
            return Err(err(
                "model.preset",
                format!(
                    "preset `{}` is not available yet; available: {}",
                    name,
                    Preset::available()
                ),
            ))
        }
        None => {
            return Err(err(
                "model.preset",
                format!(
                    "unknown preset `{}`; available: {}",
                    name,
                    Preset::available()
                ),
            ))
        }
    };

    // Keys the preset does not use.
    let present = [
        ("hidden", m.hidden.is_some()),
        ("depth", m.depth.is_some()),
        ("channels", m.channels.is_some()),
        ("kernel", m.kernel.is_some()),
        ("order", m.order.is_some()),
        ("combine", m.combine.is_some()),
    ];
    for (key, is_set) in present {
        if is_set && !preset.uses_key(key) {
            let users: Vec<Preset> = Preset::ALL
                .into_iter()
                .filter(|p| p.uses_key(key))
                .collect();
            return Err(err(
                &format!("model.{key}"),
                format!(
                    "`model.{key}` is only used by {}; remove it{}",
                    preset_list(&users),
                    unused_hint(key, preset)
                ),
            ));
        }
    }

    let hidden = if preset.uses_key("hidden") {
        let what = if preset == Preset::Siamese {
            "the hidden widths of the shared tower"
        } else {
            "the hidden-layer widths"
        };
        widths(&m.hidden, "hidden", preset, what, "[250, 250]", &err)?
    } else {
        Vec::new()
    };
    let depth = if preset.uses_key("depth") {
        match m.depth {
            None => {
                return Err(err(
                    "model.depth",
                    format!("`model.depth` is required for preset {preset}: the number of residual blocks, e.g. depth = 16"),
                ))
            }
            Some(0) => {
                return Err(err(
                    "model.depth",
                    "`model.depth` must be at least 1 (the number of residual blocks)".into(),
                ))
            }
            Some(depth) => depth,
        }
    } else {
        0
    };
    let channels = if preset.uses_key("channels") {
        let (what, example) = match preset {
            Preset::ConvResnet => ("`[width]`, the channels of every residual block", "[16]"),
            Preset::Unet => ("the channels of each encoder level", "[16, 32]"),
            _ => ("the channels of each convolutional block", "[16, 32]"),
        };
        let c = widths(&m.channels, "channels", preset, what, example, &err)?;
        if preset == Preset::ConvResnet && c.len() != 1 {
            return Err(err(
                "model.channels",
                format!(
                    "`model.channels` has {} entries; preset conv-resnet takes exactly one, its width, e.g. channels = [16] (set the number of blocks with `model.depth`)",
                    c.len()
                ),
            ));
        }
        c
    } else {
        Vec::new()
    };
    let kernel = if preset.uses_key("kernel") {
        let k = m.kernel.unwrap_or(DEFAULT_KERNEL);
        if k.is_multiple_of(2) {
            return Err(err(
                "model.kernel",
                format!("`model.kernel` = {k} must be odd and at least 1 (a same-padded k×k convolution keeps the image size only for odd k), e.g. kernel = 3"),
            ));
        }
        k
    } else {
        0
    };
    let order = if preset.uses_key("order") {
        let k = m.order.unwrap_or(DEFAULT_ORDER);
        if k == 0 {
            return Err(err(
                "model.order",
                "`model.order` must be at least 1 (the Chebyshev order K: T_0 … T_{K−1} of the scaled Laplacian), e.g. order = 3".into(),
            ));
        }
        k
    } else {
        0
    };
    let combine = match m.combine.as_deref() {
        None | Some("abs-diff") => PairCombine::AbsDiff,
        Some("concat") => PairCombine::Concat,
        Some(other) => {
            return Err(err(
                "model.combine",
                format!("unknown combine `{other}`; available: abs-diff (|f(a) − f(b)|), concat ([f(a); f(b)])"),
            ))
        }
    };

    let activation = match &m.activation {
        None => Activation::leaky_relu(),
        Some(a) => parse_activation(a, file_label, "model.activation")?,
    };
    let init = match &m.init {
        None => InitScheme::Torch,
        Some(i) => parse_init(i, file_label, "model.init")?,
    };
    Ok(ModelConfig {
        arch: Architecture::Preset(preset),
        hidden,
        depth,
        channels,
        kernel,
        order,
        combine,
        activation,
        init,
    })
}

/// Resolves a `[model]` with `layers`: no preset keys; the list itself is checked against
/// `[data]` in [`super::validate`].
fn resolve_layers(
    m: &RawModel,
    layers: &[crate::spec::LayerSpec],
    file_label: &Path,
) -> Result<ModelConfig> {
    let present = [
        ("hidden", m.hidden.is_some()),
        ("depth", m.depth.is_some()),
        ("channels", m.channels.is_some()),
        ("kernel", m.kernel.is_some()),
        ("order", m.order.is_some()),
        ("combine", m.combine.is_some()),
    ];
    if let Some((key, _)) = present.iter().find(|(_, set)| *set) {
        return Err(Error::config(
            file_label,
            &format!("model.{key}"),
            format!("`model.{key}` is a preset key; a layer list states its sizes in its layers (e.g. `out`, `kernel`, `order` of an entry): remove it"),
        ));
    }
    let activation = match &m.activation {
        None => Activation::leaky_relu(),
        Some(a) => parse_activation(a, file_label, "model.activation")?,
    };
    let init = match &m.init {
        None => InitScheme::Torch,
        Some(i) => parse_init(i, file_label, "model.init")?,
    };
    Ok(ModelConfig {
        arch: Architecture::Layers(layers.to_vec()),
        hidden: Vec::new(),
        depth: 0,
        channels: Vec::new(),
        kernel: 0,
        order: 0,
        combine: PairCombine::AbsDiff,
        activation,
        init,
    })
}

/// Reads an activation written at `field` (`model.activation`, or a layer's `activation`).
pub(crate) fn parse_activation(
    a: &NameOrTable<RawActivationTable>,
    file: &Path,
    field: &str,
) -> Result<Activation> {
    const AVAILABLE: &str = "leaky-relu, prelu, relu, sigmoid, piecewise";
    let unknown = |kind: &str| {
        Error::config(
            file,
            field,
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
                field,
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
                        &format!("{field}.{key}"),
                        format!(
                            "`{field}.{key}` is not used by activation kind `{}`; remove it",
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
                            &format!("{field}.slope"),
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
                            &format!("{field}.init"),
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
                            &format!("{field}.{key}"),
                            format!("`{field}.{key}` is required for a piecewise activation: `breakpoints` b_1 < … < b_K split R into K + 1 pieces, `coefficients` gives each piece's polynomial in increasing powers, e.g. breakpoints = [-1.0, 1.0], coefficients = [[-0.5], [0.0, 0.5], [0.5]]"),
                        ));
                    };
                    PiecewisePolynomial::new(b.clone(), c.clone())
                        .map(Activation::Piecewise)
                        .map_err(|e| Error::config(file, field, e.to_string()))
                }
            }
        }
    }
}

/// Reads an initialisation written at `field` (`model.init`, or `init` of a JSON spec).
/// Reads an initialisation written at `field` (`model.init`, or `init` of a JSON spec).
pub(crate) fn parse_init(
    i: &NameOrTable<RawInitTable>,
    file: &Path,
    field: &str,
) -> Result<InitScheme> {
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
                    field,
                    "init `normal` needs a standard deviation; write it as a table: init = { kind = \"normal\", std = 0.1 }",
                ))
            }
            Some(None) => {
                return Err(Error::config(
                    file,
                    &format!("{field}.std"),
                    format!("`{field}.std` is required for init kind `normal`, e.g. init = {{ kind = \"normal\", std = 0.1 }}"),
                ))
            }
            Some(Some(s)) if !(s.is_finite() && s > 0.0) => {
                return Err(Error::config(
                    file,
                    &format!("{field}.std"),
                    format!("`{field}.std` = {s} must be positive and finite, e.g. std = 0.1"),
                ))
            }
            Some(Some(s)) => InitScheme::Normal { std: s },
        },
        other => {
            return Err(Error::config(
                file,
                field,
                format!("unknown init `{other}`; available: torch (PyTorch's nn.Linear default), kaiming-normal, {{ kind = \"normal\", std = … }}"),
            ))
        }
    };
    if let (Some(Some(_)), false) = (std, matches!(scheme, InitScheme::Normal { .. })) {
        return Err(Error::config(
            file,
            &format!("{field}.std"),
            format!("`{field}.std` is only used by init kind `normal`; remove it for `{kind}`"),
        ));
    }
    Ok(scheme)
}
