//! `[model]`: the preset and its keys (resolved into a [`ModelSpec`], keys the preset does not
//! take refused), or a layer list; the activation and the initialisation.

use super::*;
use crate::activation::PiecewisePolynomial;
use crate::layers::PairCombine;

/// "preset a", "presets a and b", "presets a, b and c".
fn preset_list(presets: &[Preset]) -> String {
    let names: Vec<&str> = presets.iter().map(|p| p.name()).collect();
    match names.as_slice() {
        [one] => format!("preset {one}"),
        [init @ .., last] => format!("presets {} and {last}", init.join(", ")),
        [] => "no preset".to_string(),
    }
}

/// Why `model.{key}` means nothing for `preset`, which takes the keys `takes`, and what to write
/// instead (with a leading space).
fn unused_hint(key: &str, preset: Preset, takes: &[&str]) -> String {
    let has_hidden = takes.contains(&"hidden");
    let sizes = if has_hidden {
        "`model.hidden`"
    } else if preset.needs_images() {
        "`model.channels`"
    } else {
        "data.d"
    };
    match key {
        "depth" if has_hidden => {
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

/// The `[model]` keys `preset` takes: those of its spec ([`ModelSpec::keys`]), resolved from a
/// `[model]` that sets every preset key to a valid value.
pub(super) fn keys_taken_by(preset: Preset) -> Vec<&'static str> {
    let every_key = RawModel {
        hidden: Some(vec![1]),
        depth: Some(1),
        channels: Some(vec![1]),
        kernel: Some(1),
        order: Some(1),
        combine: Some("abs-diff".into()),
        ..RawModel::default()
    };
    let spec = resolve_spec(preset, &every_key, Path::new("(every preset key)"))
        .expect("every preset resolves from valid values of all the preset keys");
    spec.keys().into_iter().map(|(key, _)| key).collect()
}

/// Reads the preset keys of a `[model]` for `preset`, each with its default, checks and an error
/// naming the field and the fix.
struct PresetKeys<'a> {
    raw: &'a RawModel,
    preset: Preset,
    file: &'a Path,
}

impl PresetKeys<'_> {
    fn err(&self, field: &str, message: String) -> Error {
        Error::config(self.file, field, message)
    }

    /// `model.hidden`: `what` the widths are, for the error when it is missing.
    fn hidden(&self, what: &str) -> Result<Vec<usize>> {
        self.widths(&self.raw.hidden, "hidden", what, "[250, 250]")
    }

    /// `model.channels`: `what` they are and an `example`, for the error when it is missing.
    fn channels(&self, what: &str, example: &str) -> Result<Vec<usize>> {
        self.widths(&self.raw.channels, "channels", what, example)
    }

    /// `model.channels` of conv-resnet: exactly `[width]`.
    fn width(&self) -> Result<usize> {
        let what = "`[width]`, the channels of every residual block";
        match self.channels(what, "[16]")?.as_slice() {
            [width] => Ok(*width),
            c => Err(self.err(
                "model.channels",
                format!(
                    "`model.channels` has {} entries; preset conv-resnet takes exactly one, its width, e.g. channels = [16] (set the number of blocks with `model.depth`)",
                    c.len()
                ),
            )),
        }
    }

    /// A list of positive widths at `model.{key}`, required.
    fn widths(
        &self,
        v: &Option<Vec<usize>>,
        key: &str,
        what: &str,
        example: &str,
    ) -> Result<Vec<usize>> {
        let (field, preset) = (format!("model.{key}"), self.preset);
        let w = match v {
            None => {
                return Err(self.err(
                    &field,
                    format!(
                        "`{field}` is required for preset {preset}: {what}, e.g. {key} = {example}"
                    ),
                ))
            }
            Some(w) if w.is_empty() => {
                return Err(self.err(
                    &field,
                    format!("`{field}` is empty; list at least one width, e.g. {key} = {example}"),
                ))
            }
            Some(w) => w.clone(),
        };
        if let Some(i) = w.iter().position(|&x| x == 0) {
            return Err(self.err(
                &field,
                format!("width {i} of `{field}` is 0; every width must be at least 1"),
            ));
        }
        Ok(w)
    }

    /// `model.depth`: the number of residual blocks, required, at least 1.
    fn depth(&self) -> Result<usize> {
        match self.raw.depth {
            None => Err(self.err(
                "model.depth",
                format!("`model.depth` is required for preset {}: the number of residual blocks, e.g. depth = 16", self.preset),
            )),
            Some(0) => Err(self.err(
                "model.depth",
                "`model.depth` must be at least 1 (the number of residual blocks)".into(),
            )),
            Some(depth) => Ok(depth),
        }
    }

    /// `model.kernel`: odd, default [`DEFAULT_KERNEL`].
    fn kernel(&self) -> Result<usize> {
        let k = self.raw.kernel.unwrap_or(DEFAULT_KERNEL);
        if k.is_multiple_of(2) {
            return Err(self.err(
                "model.kernel",
                format!("`model.kernel` = {k} must be odd and at least 1 (a same-padded k×k convolution keeps the image size only for odd k), e.g. kernel = 3"),
            ));
        }
        Ok(k)
    }

    /// `model.order`: the Chebyshev order, at least 1, default [`DEFAULT_ORDER`].
    fn order(&self) -> Result<usize> {
        let k = self.raw.order.unwrap_or(DEFAULT_ORDER);
        if k == 0 {
            return Err(self.err(
                "model.order",
                "`model.order` must be at least 1 (the Chebyshev order K: T_0 … T_{K−1} of the scaled Laplacian), e.g. order = 3".into(),
            ));
        }
        Ok(k)
    }

    /// `model.combine`: "abs-diff" (default) or "concat".
    fn combine(&self) -> Result<PairCombine> {
        match self.raw.combine.as_deref() {
            None | Some("abs-diff") => Ok(PairCombine::AbsDiff),
            Some("concat") => Ok(PairCombine::Concat),
            Some(other) => Err(self.err(
                "model.combine",
                format!("unknown combine `{other}`; available: abs-diff (|f(a) − f(b)|), concat ([f(a); f(b)])"),
            )),
        }
    }
}

/// The spec of `preset` from the keys of `m` (which it does not check for keys the preset does
/// not take). Keys are read, and their errors reported, in the order hidden, depth, channels,
/// kernel, order, combine.
fn resolve_spec(preset: Preset, m: &RawModel, file_label: &Path) -> Result<ModelSpec> {
    let keys = PresetKeys {
        raw: m,
        preset,
        file: file_label,
    };
    let layer_widths = "the hidden-layer widths";
    let conv_blocks = "the channels of each convolutional block";
    Ok(match preset {
        Preset::Dnn => ModelSpec::Dnn {
            hidden: keys.hidden(layer_widths)?,
        },
        Preset::Resnet => ModelSpec::Resnet {
            depth: keys.depth()?,
        },
        Preset::Gcn => ModelSpec::Gcn {
            hidden: keys.hidden(layer_widths)?,
        },
        Preset::Cnn => ModelSpec::Cnn {
            channels: keys.channels(conv_blocks, "[16, 32]")?,
            kernel: keys.kernel()?,
        },
        Preset::ConvResnet => ModelSpec::ConvResnet {
            depth: keys.depth()?,
            width: keys.width()?,
            kernel: keys.kernel()?,
        },
        Preset::Cheb => ModelSpec::Cheb {
            hidden: keys.hidden(layer_widths)?,
            order: keys.order()?,
        },
        Preset::GraphConv => ModelSpec::GraphConv {
            hidden: keys.hidden(layer_widths)?,
        },
        Preset::Unet => ModelSpec::Unet {
            channels: keys.channels("the channels of each encoder level", "[16, 32]")?,
            kernel: keys.kernel()?,
        },
        Preset::Mobilenet => ModelSpec::Mobilenet {
            channels: keys.channels(conv_blocks, "[16, 32]")?,
            kernel: keys.kernel()?,
        },
        Preset::Siamese => ModelSpec::Siamese {
            hidden: keys.hidden("the hidden widths of the shared tower")?,
            combine: keys.combine()?,
        },
    })
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

    // Keys the preset does not take, before the values of those it takes.
    let takes = keys_taken_by(preset);
    if let Some(key) = m
        .preset_keys_given()
        .into_iter()
        .find(|k| !takes.contains(k))
    {
        let users: Vec<Preset> = Preset::ALL
            .into_iter()
            .filter(|p| keys_taken_by(*p).contains(&key))
            .collect();
        return Err(err(
            &format!("model.{key}"),
            format!(
                "`model.{key}` is only used by {}; remove it{}",
                preset_list(&users),
                unused_hint(key, preset, &takes)
            ),
        ));
    }
    let spec = resolve_spec(preset, m, file_label)?;

    let activation = match &m.activation {
        None => Activation::leaky_relu(),
        Some(a) => parse_activation(a, file_label, "model.activation")?,
    };
    let init = match &m.init {
        None => InitScheme::Torch,
        Some(i) => parse_init(i, file_label, "model.init")?,
    };
    Ok(ModelConfig {
        arch: Architecture::Preset(spec),
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
    if let Some(key) = m.preset_keys_given().first() {
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
