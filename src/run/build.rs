//! Building a run from a validated [`Config`]: data, graph (edge list or k-nearest neighbours),
//! model (preset or layer list) and θ₀, with the memory checks that refuse a run this machine
//! cannot hold — everything that can be wrong with the input, before anything is written.

use crate::config::{
    check_layer_outputs, Architecture, Config, DataConfig, GraphConfig, ModelSpec, Preset,
};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::init::init_params;
use crate::io;
use crate::layers::ImageShape;
use crate::model::Model;
use crate::presets;
use crate::spec::{build_layers, GraphOperators, LayerSpec, Shape, SpecSite};
use std::sync::Arc;

/// Everything a run needs, built and checked.
pub struct Prepared {
    pub config: Config,
    pub data: Dataset,
    pub model: Model,
    pub theta0: Vec<f64>,
}

impl Prepared {
    pub fn n(&self) -> usize {
        self.data.n()
    }
    pub fn m(&self) -> usize {
        self.data.m()
    }
    pub fn nm(&self) -> usize {
        self.n() * self.m()
    }
}

/// Builds data, graph, model and θ₀ from `config`, checking everything that can be wrong.
pub fn prepare(config: &Config) -> Result<Prepared> {
    let (n, width, m_data) = match config.data {
        DataConfig::Ball { n, d, m } | DataConfig::Pairs { n, d, m } => (n, d, m),
        DataConfig::Images {
            n,
            channels,
            height,
            width,
            m,
        } => (n, channels * height * width, m),
        DataConfig::Npy { .. } => (0, 0, 0),
    };
    let bytes = (n as u64)
        .saturating_mul((2 * width + m_data) as u64)
        .saturating_mul(8);
    if available_bytes().is_some_and(|avail| bytes > avail) {
        return Err(Error::config(
            &config.source,
            "data.n",
            format!(
                "the data alone need {:.1} GB (n·(d+m) f64 values), more than this machine has: lower data.n or data.d",
                bytes as f64 / 1e9
            ),
        ));
    }
    let (model_cfg, seed) = (&config.model, config.seed);
    let mut data = match config.data {
        DataConfig::Ball { n, d, m } => Dataset::ball(n, d, m, seed),
        DataConfig::Npy { ref x, ref y } => Dataset::from_npy(x, y)?,
        DataConfig::Pairs { n, d, m } => Dataset::pairs(n, d, m, seed),
        DataConfig::Images {
            n,
            channels,
            height,
            width,
            m,
        } => {
            // A U-Net's targets are images with m channels.
            let target = if model_cfg.preset() == Some(Preset::Unet) {
                m * height * width
            } else {
                m
            };
            Dataset::images(n, channels, height, width, target, seed)
        }
    };
    let act = &model_cfg.activation;
    let (d, m) = (data.d(), data.m());
    let image = match config.data {
        DataConfig::Images {
            channels,
            height,
            width,
            ..
        } => Some(ImageShape::new(channels, height, width)),
        _ => None,
    };
    let need_image = || {
        image.ok_or_else(|| {
            Error::config(
                &config.source,
                "data.kind",
                format!("{} needs kind = \"images\"", model_cfg.label()),
            )
        })
    };
    let graph = if model_cfg.needs_graph() {
        let graph = match config.graph.as_ref() {
            Some(GraphConfig::Edges { path }) => {
                Graph::from_edges(data.n(), io::read_edges(path, data.n())?)
            }
            Some(GraphConfig::Knn { k }) => knn_graph(&data, *k, config)?,
            None => knn_graph(&data, crate::config::DEFAULT_K, config)?,
        };
        data.graph = Some(graph.clone());
        Some(graph)
    } else {
        None
    };
    let spec = match &model_cfg.arch {
        Architecture::Preset(spec) => spec,
        Architecture::Layers(layers) => {
            let input = image.map_or(Shape::Vector(d), Shape::Image);
            let model = layer_model(config, layers, input, m, graph.as_ref())?;
            return finish_prepare(config, data, model);
        }
    };
    let need_graph = || {
        graph.as_ref().ok_or_else(|| {
            Error::Invalid(format!(
                "{} needs a graph on the samples",
                model_cfg.label()
            ))
        })
    };
    // One arm per preset, no catch-all: a new ModelSpec variant needs its builder here.
    let model = match spec {
        ModelSpec::Dnn { hidden } => presets::dnn(d, hidden, m, act),
        ModelSpec::Resnet { depth } => presets::resnet(d, *depth, m, act),
        ModelSpec::Gcn { hidden } => {
            let a_hat = need_graph()?.normalized_adjacency();
            presets::gcn(Arc::new(a_hat), d, hidden, m, act)
        }
        ModelSpec::Cheb { hidden, order } => presets::cheb(
            Arc::new(crate::graph::scaled_laplacian(need_graph()?, None)),
            d,
            hidden,
            *order,
            m,
            act,
        ),
        ModelSpec::GraphConv { hidden } => {
            presets::graphconv(Arc::new(need_graph()?.adjacency()), d, hidden, m, act)
        }
        ModelSpec::Cnn { channels, kernel } => {
            presets::cnn(need_image()?, channels, *kernel, m, act)
        }
        ModelSpec::ConvResnet {
            width,
            depth,
            kernel,
        } => presets::conv_resnet(need_image()?, *width, *depth, *kernel, m, act),
        ModelSpec::Unet { channels, kernel } => {
            let shape = need_image()?;
            presets::unet(shape, channels, *kernel, m / (shape.h * shape.w), act)
        }
        ModelSpec::Mobilenet { channels, kernel } => {
            presets::mobilenet(need_image()?, channels, *kernel, m, act)
        }
        ModelSpec::Siamese { hidden, combine } => {
            if d % 2 != 0 {
                return Err(Error::Invalid(format!(
                    "siamese inputs are pairs [a; b]: the data have {d} features, an odd number"
                )));
            }
            presets::siamese(d / 2, hidden, *combine, m, act)
        }
    };
    finish_prepare(config, data, model)
}

/// The model of a layer list on inputs of shape `input` with `m` targets per sample.
fn layer_model(
    config: &Config,
    layers: &[LayerSpec],
    input: Shape,
    m: usize,
    graph: Option<&Graph>,
) -> Result<Model> {
    let site = SpecSite {
        file: &config.source,
        root: "model.layers",
    };
    let operators = graph.map(GraphOperators::new);
    let activation = &config.model.activation;
    let built = build_layers(layers, input, activation, operators.as_ref(), &site)?;
    check_layer_outputs(built.output, Some(m), &config.source)?;
    Ok(built.into_model(activation.clone()))
}

/// The memory check and θ₀, once the model is built.
fn finish_prepare(config: &Config, data: Dataset, model: Model) -> Result<Prepared> {
    check_training_memory(&model, data.n(), config)?;
    let theta0 = init_params(&model.param_specs(), &config.model.init, config.seed);
    Ok(Prepared {
        config: config.clone(),
        data,
        model,
        theta0,
    })
}

/// Bytes a GD epoch needs, estimated: data, θ with its gradient and the update, and every
/// layer's output kept for the reverse pass plus the cotangents flowing back (×3).
pub fn training_bytes(model: &Model, n: usize) -> u64 {
    fn widths(l: &dyn crate::layers::Layer) -> u64 {
        let kids = l.children();
        if kids.is_empty() {
            l.out_dim() as u64
        } else {
            kids.into_iter().map(widths).sum()
        }
    }
    let (n, p) = (n as u64, model.p() as u64);
    8 * (n * (model.in_dim() + model.out_dim()) as u64 + 3 * p + 3 * n * widths(model.net.as_ref()))
}

/// Memory this machine can still give (MemAvailable), when the OS tells.
fn available_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    line.split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Refuses a run whose training would not fit in memory, before anything is allocated or written.
fn check_training_memory(model: &Model, n: usize, config: &Config) -> Result<()> {
    let need = training_bytes(model, n);
    if let Some(avail) = available_bytes() {
        if need > avail {
            return Err(Error::config(
                &config.source,
                "model",
                format!(
                    "training would need about {:.1} GB (data, parameters and activations for n = {n}, p = {}), \
                     but only {:.1} GB of memory is available: use fewer samples (data.n) or narrower/shallower \
                     layers (model.hidden / model.depth)",
                    need as f64 / 1e9,
                    model.p(),
                    avail as f64 / 1e9
                ),
            ));
        }
    }
    Ok(())
}

fn knn_graph(data: &Dataset, k: usize, config: &Config) -> Result<Graph> {
    if k >= data.n() {
        return Err(Error::config(
            &config.source,
            "graph.k",
            format!(
                "k = {k} must be smaller than the number of samples n = {} in the data: lower k in [graph] \
                 (the default is {})",
                data.n(),
                crate::config::DEFAULT_K
            ),
        ));
    }
    Graph::knn(&data.x, k)
}
