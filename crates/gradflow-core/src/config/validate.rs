//! Validation: checks the raw values against each other and resolves them into [`Config`]
//! (`[model]` itself is resolved in [`super::model`]).

use super::model::resolve_model;
use super::*;
use crate::layers::ImageShape;
use crate::spec::{check_layers, InputSpec, LayerSpec, Shape, SpecSite};

/// The keys of `[data]` other than `kind`.
const DATA_KEYS: [&str; 8] = ["n", "d", "m", "channels", "height", "width", "x", "y"];

/// The `[data]` keys each kind uses, and what its data are made from (for hints).
fn data_kind(kind: &str) -> Option<(&'static [&'static str], &'static str)> {
    Some(match kind {
        "ball" => (&["n", "d", "m"], "ball data are generated from n, d, m"),
        "npy" => (&["x", "y"], "npy data take n, d, m from the arrays"),
        "images" => (
            &["n", "channels", "height", "width", "m"],
            "image data are generated from n, channels, height, width, m",
        ),
        "pairs" => (
            &["n", "d", "m"],
            "pairs are generated from n, d (the size of each half), m",
        ),
        _ => return None,
    })
}

const DATA_KINDS: [&str; 4] = ["ball", "npy", "images", "pairs"];

fn resolve_data(r: &RawData, file_label: &Path, base_dir: &Path) -> Result<DataConfig> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    let kind = r.kind.as_str();
    let Some((uses, made_of)) = data_kind(kind) else {
        return Err(err(
            "data.kind",
            format!(
                "unknown data kind `{kind}`; available: {}",
                DATA_KINDS.join(", ")
            ),
        ));
    };
    let present = [
        ("n", r.n.is_some()),
        ("d", r.d.is_some()),
        ("m", r.m.is_some()),
        ("channels", r.channels.is_some()),
        ("height", r.height.is_some()),
        ("width", r.width.is_some()),
        ("x", r.x.is_some()),
        ("y", r.y.is_some()),
    ];
    debug_assert_eq!(present.map(|(k, _)| k), DATA_KEYS);
    for (key, is_set) in present {
        if is_set && !uses.contains(&key) {
            let users: Vec<String> = DATA_KINDS
                .into_iter()
                .filter(|k| data_kind(k).is_some_and(|(u, _)| u.contains(&key)))
                .map(|k| format!("\"{k}\""))
                .collect();
            return Err(err(
                &format!("data.{key}"),
                format!(
                    "`data.{key}` is only used by data.kind = {}; remove it ({made_of})",
                    users.join(" or ")
                ),
            ));
        }
    }
    let dim = |key: &str, v: Option<usize>, what: &str, example: usize| {
        match v {
        None => Err(err(
            &format!("data.{key}"),
            format!("`data.{key}` is required for data.kind = \"{kind}\": {what}, e.g. {key} = {example}"),
        )),
        Some(0) => Err(err(
            &format!("data.{key}"),
            format!("`data.{key}` must be at least 1 ({what})"),
        )),
        Some(v) => Ok(v),
    }
    };
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
        Some(s) => Ok(base_dir.join(s)),
    }
    };
    Ok(match kind {
        "ball" => DataConfig::Ball {
            n: dim("n", r.n, "the number of samples", 100)?,
            d: dim("d", r.d, "the input dimension", 100)?,
            m: dim("m", r.m, "the output dimension", 100)?,
        },
        "npy" => DataConfig::Npy {
            x: path("x", &r.x, "the n × d inputs")?,
            y: path("y", &r.y, "the n × m targets")?,
        },
        "images" => DataConfig::Images {
            n: dim("n", r.n, "the number of images", 100)?,
            channels: dim("channels", r.channels, "the channels of each image", 3)?,
            height: dim("height", r.height, "the image height in pixels", 8)?,
            width: dim("width", r.width, "the image width in pixels", 8)?,
            m: dim(
                "m",
                r.m,
                "the output dimension (for unet: the number of output channels)",
                3,
            )?,
        },
        _ => DataConfig::Pairs {
            n: dim("n", r.n, "the number of pairs", 100)?,
            d: dim("d", r.d, "the dimension of each half of a pair", 10)?,
            m: dim("m", r.m, "the output dimension", 2)?,
        },
    })
}

/// The input shape of a layer list on `data`, when known before loading anything.
fn layer_input(data: &DataConfig) -> Option<Shape> {
    match *data {
        DataConfig::Ball { d, .. } => Some(Shape::Vector(d)),
        DataConfig::Pairs { d, .. } => Some(Shape::Vector(2 * d)),
        DataConfig::Images {
            channels,
            height,
            width,
            ..
        } => Some(Shape::Image(ImageShape::new(channels, height, width))),
        DataConfig::Npy { .. } => None,
    }
}

/// A layer list against `[data]`: `model.input` (when given) agrees with the data, and the
/// list's shapes check out from the input to `data.m` outputs.
fn check_data_for_layers(
    data: &DataConfig,
    model: &ModelConfig,
    layers: &[LayerSpec],
    input: Option<InputSpec>,
    file_label: &Path,
) -> Result<()> {
    let from_data = layer_input(data);
    if let (Some(given), Some(shape)) = (input, from_data) {
        if given.shape() != shape {
            return Err(Error::config(
                file_label,
                "model.input",
                format!("`model.input` says {} but [data] gives {shape}: make them agree or remove `model.input`", given.shape()),
            ));
        }
    }
    let Some(shape) = from_data.or(input.map(|i| i.shape())) else {
        return Ok(());
    };
    let site = SpecSite {
        file: file_label,
        root: "model.layers",
    };
    let out = check_layers(layers, shape, &model.activation, model.needs_graph(), &site)?;
    check_layer_outputs(out, data.m(), file_label)
}

/// The last layer of a list must give `m` outputs per sample (when m is known).
pub fn check_layer_outputs(out: Shape, m: Option<usize>, file_label: &Path) -> Result<()> {
    match (out, m) {
        (Shape::Vector(o), Some(m)) if o != m => Err(Error::config(
            file_label,
            "model.layers",
            format!("the layers give {o} outputs per sample but the targets have m = {m}: make the last layer {{ kind = \"dense\", out = {m} }}"),
        )),
        (Shape::Image(s), Some(m)) if s.len() != m => Err(Error::config(
            file_label,
            "model.layers",
            format!("the layers end with a {s} image ({} outputs per sample) but the targets have m = {m}: end with {{ kind = \"flatten\" }} and {{ kind = \"dense\", out = {m} }}", s.len()),
        )),
        _ => Ok(()),
    }
}

/// The checks between `[data]` and `[model]`: the data kind a preset takes, and unet's levels.
fn check_data_for_model(
    data: &DataConfig,
    model: &ModelConfig,
    input: Option<InputSpec>,
    file_label: &Path,
) -> Result<()> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    let (spec, preset) = match &model.arch {
        Architecture::Preset(spec) => (spec, spec.preset()),
        Architecture::Layers(layers) => {
            return check_data_for_layers(data, model, layers, input, file_label)
        }
    };
    let kind = data.kind();
    let image_presets = "cnn, conv-resnet, unet, mobilenet";
    let usual = if preset.needs_images() {
        "\"images\""
    } else if preset.needs_pairs() {
        "\"pairs\""
    } else {
        "\"ball\" or \"npy\""
    };
    if preset.needs_images() && kind != "images" {
        return Err(err(
            "data.kind",
            format!("preset {preset} takes images: set data.kind = \"images\" with n, channels, height, width, m (data.kind is \"{kind}\")"),
        ));
    }
    if preset.needs_pairs() && kind != "pairs" {
        return Err(err(
            "data.kind",
            format!("preset {preset} takes input pairs: set data.kind = \"pairs\" with n, d, m (x = [a; b], a and b in the unit ball of R^d; data.kind is \"{kind}\")"),
        ));
    }
    if kind == "images" && !preset.needs_images() {
        return Err(err(
            "data.kind",
            format!("data.kind = \"images\" is only used by the image presets ({image_presets}); preset {preset} takes data.kind = {usual}"),
        ));
    }
    if kind == "pairs" && !preset.needs_pairs() {
        return Err(err(
            "data.kind",
            format!("data.kind = \"pairs\" is only used by preset siamese; preset {preset} takes data.kind = {usual}"),
        ));
    }
    if let (ModelSpec::Unet { channels, .. }, Some((_, height, width))) = (spec, data.image_shape())
    {
        let levels = channels.len();
        let factor = u32::try_from(levels - 1)
            .ok()
            .and_then(|s| 1usize.checked_shl(s));
        for (key, size) in [("height", height), ("width", width)] {
            if factor.is_none_or(|f| size % f != 0) {
                let f = factor.map_or_else(|| format!("2^{}", levels - 1), |f| f.to_string());
                return Err(err(
                    &format!("data.{key}"),
                    format!("`data.{key}` = {size} must be divisible by 2^(levels − 1) = {f} for preset unet with {levels} levels (the entries of `model.channels`): each level below the first halves the image; use a multiple of {f} or fewer levels"),
                ));
            }
        }
    }
    Ok(())
}

fn resolve_graph(
    raw: Option<&RawGraph>,
    model: &ModelConfig,
    data: &DataConfig,
    file_label: &Path,
    base_dir: &Path,
) -> Result<Option<GraphConfig>> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    if !model.needs_graph() {
        if raw.is_some() {
            let graph_presets: Vec<&str> = Preset::ALL
                .into_iter()
                .filter(Preset::is_graph)
                .map(|p| p.name())
                .collect();
            return Err(err(
                "graph",
                format!(
                    "a [graph] section is only used by graph presets ({}) and by layer lists with propagate, graphconv or cheb layers; remove it for {}",
                    graph_presets.join(", "),
                    model.label()
                ),
            ));
        }
        return Ok(None);
    }
    let g = raw.cloned().unwrap_or_default();
    Ok(Some(match (g.k, g.edges) {
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
        (None, Some(e)) => GraphConfig::Edges {
            path: base_dir.join(e),
        },
        (k, None) => {
            let defaulted = k.is_none();
            let k = k.unwrap_or(DEFAULT_K);
            if k == 0 {
                return Err(err("graph.k", "`graph.k` must be at least 1".into()));
            }
            if let Some(n) = data.n() {
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
    }))
}

fn resolve_train(raw: Option<&RawTrain>, file_label: &Path) -> Result<TrainConfig> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    let t = raw.cloned().unwrap_or_default();
    let defaults = TrainConfig::default();
    let solver = match t.solver.as_deref() {
        None | Some("gd") => Solver::Gd,
        Some("flow") => Solver::Flow,
        Some(other) => {
            return Err(err(
                "train.solver",
                format!("unknown solver `{other}`; available: gd (gradient descent), flow (adaptive, kink-aware gradient-flow solve)"),
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
        Some("f32") => Precision::F32,
        Some(other) => {
            return Err(err(
                "train.precision",
                format!("unknown precision `{other}`; available: f64, f32"),
            ))
        }
    };
    let log_every = t.log_every.unwrap_or(defaults.log_every);
    if log_every == 0 {
        return Err(err(
            "train.log_every",
            "`train.log_every` must be at least 1 (a metrics row every this many epochs)".into(),
        ));
    }
    let epochs = t.epochs.unwrap_or(defaults.epochs);
    let flow = resolve_flow(&t, solver, lr, epochs, file_label)?;
    Ok(TrainConfig {
        solver,
        lr,
        epochs,
        loss,
        precision,
        log_every,
        flow,
    })
}

/// The flow keys of `[train]`: only meaningful with solver = "flow".
fn resolve_flow(
    t: &RawTrain,
    solver: Solver,
    lr: f64,
    epochs: usize,
    file_label: &Path,
) -> Result<FlowConfig> {
    let err = |field: &str, message: String| Error::config(file_label, field, message);
    let d = FlowConfig::default();
    if solver == Solver::Gd {
        let given = [
            ("t_end", t.t_end.is_some()),
            ("rtol", t.rtol.is_some()),
            ("atol", t.atol.is_some()),
            ("outputs", t.outputs.is_some()),
            ("kink_aware", t.kink_aware.is_some()),
            ("compare_gd", t.compare_gd.is_some()),
        ];
        if let Some((key, _)) = given.iter().find(|(_, g)| *g) {
            return Err(err(
                &format!("train.{key}"),
                format!("`{key}` applies to solver = \"flow\"; with solver = \"gd\" the run is `epochs` steps of `lr` (t = lr·epochs). Set solver = \"flow\" or remove `{key}`"),
            ));
        }
        return Ok(FlowConfig {
            t_end: lr * epochs as f64,
            ..d
        });
    }
    let t_end = t.t_end.unwrap_or(lr * epochs as f64);
    if !(t_end.is_finite() && t_end > 0.0) {
        return Err(err(
            "train.t_end",
            format!("`train.t_end` = {t_end} is not allowed: the flow's end time must be positive and finite, e.g. t_end = 20.0 (default lr·epochs)"),
        ));
    }
    let rtol = t.rtol.unwrap_or(d.rtol);
    if !(1e-14..1.0).contains(&rtol) {
        return Err(err(
            "train.rtol",
            format!("`train.rtol` = {rtol} is not allowed: the relative tolerance must lie in [1e-14, 1), e.g. rtol = 1e-8"),
        ));
    }
    let atol = t.atol.unwrap_or(d.atol);
    if !(atol.is_finite() && atol > 0.0) {
        return Err(err(
            "train.atol",
            format!("`train.atol` = {atol} is not allowed: the absolute tolerance must be positive and finite, e.g. atol = 1e-10"),
        ));
    }
    let outputs = t.outputs.unwrap_or(d.outputs);
    if outputs == 0 || outputs > 1_000_000 {
        return Err(err(
            "train.outputs",
            format!("`train.outputs` = {outputs} is not allowed: give the number of output intervals on [0, t_end], 1 to 1,000,000 (e.g. 200)"),
        ));
    }
    Ok(FlowConfig {
        t_end,
        rtol,
        atol,
        outputs,
        kink_aware: t.kink_aware.unwrap_or(d.kink_aware),
        compare_gd: t.compare_gd.unwrap_or(d.compare_gd),
    })
}

/// f32 training exists only on the compiled engine, i.e. for the dnn, resnet and gcn presets.
fn check_precision(train: &TrainConfig, model: &ModelConfig, file_label: &Path) -> Result<()> {
    if train.precision == Precision::F32 && train.solver == Solver::Flow {
        return Err(Error::config(
            file_label,
            "train.precision",
            "the flow solver integrates in f64 only (its error control and kink events need it); \
             set train.precision = \"f64\" or use solver = \"gd\""
                .to_string(),
        ));
    }
    if train.precision == Precision::F32 && !model.preset().is_some_and(|p| p.has_engine()) {
        return Err(Error::config(
            file_label,
            "train.precision",
            format!(
                "precision \"f32\" is available only for the presets {} (trained by the compiled \
                 engine); {} trains in f64: set train.precision = \"f64\" or remove it",
                Preset::engine_names(),
                model.label()
            ),
        ));
    }
    Ok(())
}

fn resolve_ntk(raw: Option<&RawNtk>, file_label: &Path) -> Result<NtkConfig> {
    let k = raw.cloned().unwrap_or_default();
    let defaults = NtkConfig::default();
    let memory_budget_gb = k.memory_budget_gb.unwrap_or(defaults.memory_budget_gb);
    if !(memory_budget_gb.is_finite() && memory_budget_gb > 0.0) {
        return Err(Error::config(
            file_label,
            "ntk.memory_budget_gb",
            format!("`ntk.memory_budget_gb` = {memory_budget_gb} must be positive and finite, e.g. memory_budget_gb = 8.0"),
        ));
    }
    Ok(NtkConfig {
        every: k.every.unwrap_or(defaults.every),
        memory_budget_gb,
        enabled: k.enabled.unwrap_or(defaults.enabled),
    })
}

impl Config {
    /// Validates already-deserialised raw values (`file_label` names the source in errors).
    pub fn from_raw(raw: RawConfig, file_label: &Path, base_dir: &Path) -> Result<Config> {
        let data = resolve_data(&raw.data, file_label, base_dir)?;
        let model = resolve_model(&raw.model, file_label)?;
        check_data_for_model(&data, &model, raw.model.input, file_label)?;
        let graph = resolve_graph(raw.graph.as_ref(), &model, &data, file_label, base_dir)?;
        let train = resolve_train(raw.train.as_ref(), file_label)?;
        check_precision(&train, &model, file_label)?;
        let ntk = resolve_ntk(raw.ntk.as_ref(), file_label)?;
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
}

pub(super) fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
