//! The paper's Section 4 ablations as lists of configs, at two scales.
//!
//! - `paper`: the paper's sizes (docs/theory.md, 'Presets') — n = 1000; DNN d = 500 → [w, w]
//!   → 50, w = 50…250; ResNet d = m = 100, depth 8…16; GCN d = 500 → [w, w] → 50, w = 25…200
//!   on a 10-NN graph; 10,000 epochs of GD.
//! - `quick`: the same structure shrunk so that every sweep still crosses p = nm and the whole
//!   reproduction (NTK included) takes about two minutes on 2 cores.
//!
//! The step η is not in the paper's text; the values here were chosen well inside GD's stability
//! limit at these sizes (2/λ_max of the loss Hessian ≈ 1/(c·λ_max(H))) and are reported with
//! every run.

use crate::activation::Activation;
use crate::config::{
    Architecture, Config, DataConfig, GraphConfig, ModelConfig, ModelSpec, NtkConfig, Preset,
    TrainConfig,
};
use crate::error::{Error, Result};
use crate::init::InitScheme;
use crate::loss::LossKind;
use std::path::PathBuf;

/// How big the reproduction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scale {
    Quick,
    Paper,
}

impl Scale {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "quick" => Ok(Self::Quick),
            "paper" => Ok(Self::Paper),
            other => Err(Error::Invalid(format!(
                "--scale `{other}` is unknown: use quick or paper"
            ))),
        }
    }
    /// The solver `reproduce` runs when none is asked for: the gradient flow (what Theorem 3.1
    /// is about) at quick scale in f64; GD at paper scale, where one flow run takes weeks
    /// (events cut nearly every step), and in f32, which only GD trains in.
    pub fn default_solver(self, precision: crate::config::Precision) -> crate::config::Solver {
        use crate::config::{Precision, Solver};
        match (self, precision) {
            (Self::Quick, Precision::F64) => Solver::Flow,
            _ => Solver::Gd,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            Self::Quick => "quick",
            Self::Paper => "paper",
        }
    }
}

/// One run of a sweep.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// Directory name inside the ablation, e.g. `w=100-seed0`.
    pub label: String,
    /// The swept value (width or depth).
    pub value: usize,
    pub seed: u64,
    pub config: Config,
}

/// A sweep over one architecture.
#[derive(Clone, Debug)]
pub struct Ablation {
    pub name: String,
    pub title: String,
    /// "width" or "depth".
    pub variable: String,
    /// Epochs the loss figure leaves out (the paper's ResNet figure skips 100).
    pub skip_epochs: usize,
    pub runs: Vec<RunSpec>,
}

/// The ablations `reproduce` runs by default (the paper's Section 4).
pub const ABLATIONS: [&str; 3] = ["dnn", "resnet", "gcn"];
/// Further sweeps `--only` accepts: `activations` (Corollaries 3.1.1 and 3.1.2) and one per
/// architecture the paper claims beyond its experiments.
pub const EXTRA_ABLATIONS: [&str; 8] = [
    "activations",
    "cnn",
    "conv-resnet",
    "unet",
    "mobilenet",
    "cheb",
    "graphconv",
    "siamese",
];

/// Paper-scale steps (see [`sizes`]): λ_max(H(0)) = 1,641 for DNN [250, 250] at nm = 50,000.
const DNN_PAPER_LR: f64 = 5.0;
const RESNET_PAPER_LR: f64 = 0.05;

struct Sizes {
    n: usize,
    d: usize,
    m: usize,
    values: Vec<usize>,
    lr: f64,
    epochs: usize,
    ntk_every: usize,
}

fn base_config(
    spec: ModelSpec,
    n: usize,
    d: usize,
    m: usize,
    lr: f64,
    epochs: usize,
    ntk_every: usize,
) -> Config {
    let preset = spec.preset();
    Config {
        seed: 0,
        data: DataConfig::Ball { n, d, m },
        graph: preset.is_graph().then_some(GraphConfig::Knn { k: 10 }),
        model: ModelConfig {
            arch: Architecture::Preset(spec),
            activation: Activation::leaky_relu(),
            init: InitScheme::Torch,
        },
        train: TrainConfig {
            lr,
            epochs,
            loss: LossKind::Mse,
            ..TrainConfig::default()
        },
        ntk: NtkConfig {
            every: ntk_every,
            ..NtkConfig::default()
        },
        base_dir: PathBuf::new(),
        source: PathBuf::from(format!("<built-in {} ablation>", preset.name())),
    }
}

/// Sizes of each sweep. dnn and gcn share theirs (the paper's d = 500, m = 50 at paper scale).
/// Steps: about a quarter of GD's stability limit nm/λ_max(H(0)) for the widest network (λ_max
/// grows several-fold as training sharpens the NTK; see `gd_stability` in ntk.csv).
fn sizes(name: &str, scale: Scale) -> Sizes {
    let (n, epochs, ntk_every) = match scale {
        Scale::Quick => (100, 6000, 500),
        Scale::Paper => (1000, 10_000, 1000),
    };
    match (name, scale) {
        ("resnet", Scale::Quick) => Sizes {
            n: 50,
            d: 10,
            m: 10,
            values: vec![2, 3, 4, 6, 8, 12],
            lr: 0.005,
            epochs,
            ntk_every,
        },
        ("resnet", Scale::Paper) => Sizes {
            n,
            d: 100,
            m: 100,
            values: vec![8, 10, 12, 14, 16],
            lr: RESNET_PAPER_LR,
            epochs,
            ntk_every,
        },
        ("dnn", Scale::Quick) | ("gcn", Scale::Quick) => Sizes {
            n,
            d: 20,
            m: 5,
            values: vec![6, 10, 14, 24, 48, 96],
            lr: 0.1,
            epochs,
            ntk_every,
        },
        ("dnn", Scale::Paper) => Sizes {
            n,
            d: 500,
            m: 50,
            values: vec![50, 100, 150, 200, 250],
            lr: DNN_PAPER_LR,
            epochs,
            ntk_every,
        },
        _ => Sizes {
            n,
            d: 500,
            m: 50,
            values: vec![25, 50, 100, 150, 200],
            lr: DNN_PAPER_LR,
            epochs,
            ntk_every,
        },
    }
}

/// Most metrics rows a flow run of a sweep writes.
pub const FLOW_MAX_OUTPUTS: usize = 200;

/// Turns a GD run's config into the same run integrated by the flow solver: to the GD horizon
/// t_end = lr·epochs, with min(epochs, [`FLOW_MAX_OUTPUTS`]) output times, and the NTK checkpoint
/// spacing translated from epochs to outputs (same times up to rounding, at least every output).
/// `lr` stays: it is the GD step the flow is compared against: GD at that step runs alongside
/// (`compare_gd`), so each flow run also reports GD's loss and its gap to the flow.
pub fn to_flow(c: &mut Config) {
    let epochs = c.train.epochs.max(1);
    let outputs = epochs.min(FLOW_MAX_OUTPUTS);
    c.train.solver = crate::config::Solver::Flow;
    c.train.flow.t_end = c.train.lr * epochs as f64;
    c.train.flow.outputs = outputs;
    c.train.flow.compare_gd = true;
    if c.ntk.every > 0 {
        let every = (c.ntk.every as f64 * outputs as f64 / epochs as f64).round() as usize;
        c.ntk.every = every.max(1);
    }
}

/// The sweep with every run integrated by the flow solver ([`to_flow`]).
pub fn as_flow(mut a: Ablation) -> Ablation {
    for r in &mut a.runs {
        to_flow(&mut r.config);
    }
    a.title = match a.title.split_once(':') {
        Some((head, rest)) => format!("{head} (gradient flow):{rest}"),
        None => format!("{} (gradient flow)", a.title),
    };
    a
}

/// The sweep `name` at `scale`, each run repeated for seeds 0..seeds.
pub fn ablation(name: &str, scale: Scale, seeds: u64) -> Result<Ablation> {
    if name == "activations" {
        return Ok(activations(scale, seeds));
    }
    if let Some(a) = architecture(name, scale, seeds) {
        return Ok(a);
    }
    // (the run at swept value v, title, variable, epochs the loss figure skips)
    type Sweep<'a> = (fn(usize) -> ModelSpec, &'a str, &'a str, usize);
    let (spec, title, variable, skip): Sweep = match name {
        "dnn" => (
            |v| ModelSpec::Dnn { hidden: vec![v, v] },
            "DNN: loss against epoch, one curve per hidden width",
            "width",
            0,
        ),
        "resnet" => (
            |v| ModelSpec::Resnet { depth: v },
            "ResNet: loss against epoch, one curve per depth",
            "depth",
            100,
        ),
        "gcn" => (
            |v| ModelSpec::Gcn { hidden: vec![v, v] },
            "GCN: loss against epoch, one curve per hidden width",
            "width",
            0,
        ),
        other => {
            return Err(Error::Invalid(format!(
                "--only `{other}` is not an ablation: choose one of {}, {}",
                ABLATIONS.join(", "),
                EXTRA_ABLATIONS.join(", ")
            )))
        }
    };
    let s = sizes(name, scale);
    let mut runs = Vec::new();
    for &v in &s.values {
        for seed in 0..seeds.max(1) {
            let mut c = base_config(spec(v), s.n, s.d, s.m, s.lr, s.epochs, s.ntk_every);
            c.seed = seed;
            let tag = if c.model.preset() == Some(Preset::Resnet) {
                "depth"
            } else {
                "w"
            };
            runs.push(RunSpec {
                label: format!("{tag}={v}-seed{seed}"),
                value: v,
                seed,
                config: c,
            });
        }
    }
    Ok(Ablation {
        name: name.into(),
        title: title.into(),
        variable: variable.into(),
        skip_epochs: skip,
        runs,
    })
}

/// The threshold ablation's grid ("almost surely", measured): for dnn, resnet and gcn, the
/// widths (depths) whose p/nm runs from about 0.8 to 2.5 at the sweeps' own n, d, m, each with
/// seeds 0..seeds. Only θ(0) is used: no training.
pub fn threshold_configs(scale: Scale, seeds: u64) -> Vec<(String, usize, u64, Config)> {
    let mut out = Vec::new();
    for name in ABLATIONS {
        let s = sizes(name, scale);
        let spec: fn(usize) -> ModelSpec = match name {
            "resnet" => |v| ModelSpec::Resnet { depth: v },
            "dnn" => |v| ModelSpec::Dnn { hidden: vec![v, v] },
            _ => |v| ModelSpec::Gcn { hidden: vec![v, v] },
        };
        let values = match (name, scale) {
            ("resnet", Scale::Quick) => vec![3, 4, 5, 6, 8, 10],
            ("resnet", Scale::Paper) => vec![7, 8, 9, 10, 12, 16, 20],
            (_, Scale::Quick) => vec![11, 12, 13, 14, 15, 16, 18, 20, 24],
            (_, Scale::Paper) => vec![70, 75, 80, 85, 90, 100, 120, 150],
        };
        for &v in &values {
            for seed in 0..seeds.max(1) {
                let mut c = base_config(spec(v), s.n, s.d, s.m, s.lr, 0, 0);
                c.seed = seed;
                c.source = PathBuf::from(format!("<built-in threshold ablation: {name}>"));
                out.push((name.to_string(), v, seed, c));
            }
        }
    }
    out
}

/// The activations of the Corollaries' limits, as (label, activation): leaky ReLU with α → 0
/// ending at ReLU (Cor. 3.1.1), and piecewise-linear interpolants of the sigmoid on [−8, 8] with
/// k pieces (constant outside; uniform error O(1/k²)), ending at the sigmoid (Cor. 3.1.2).
pub fn corollary_activations() -> Vec<(String, Activation)> {
    let mut out = Vec::new();
    for alpha in [0.3, 0.1, 0.03, 0.01, 0.001] {
        out.push((
            format!("leaky-{alpha}"),
            Activation::LeakyRelu { slope: alpha },
        ));
    }
    out.push(("relu".into(), Activation::Relu));
    for k in [2, 4, 8, 16, 32] {
        let pw = crate::activation::PiecewisePolynomial::interpolate(
            crate::activation::sigmoid,
            -8.0,
            8.0,
            k,
        )
        .expect("[−8, 8] is a proper interval");
        out.push((format!("sigmoid-pw{k}"), Activation::Piecewise(pw)));
    }
    out.push(("sigmoid".into(), Activation::Sigmoid));
    out
}

/// Corollaries 3.1.1 and 3.1.2: one over-parametrised DNN (p/nm ≈ 7 at quick scale, 4 at paper
/// scale) trained with each activation of [`corollary_activations`]; `value` is the index in that
/// list.
fn activations(scale: Scale, seeds: u64) -> Ablation {
    let (n, d, m, w, lr, epochs, every) = match scale {
        Scale::Quick => (100, 20, 5, 48, 0.1, 6000, 500),
        Scale::Paper => (1000, 500, 50, 250, 0.05, 10_000, 1000),
    };
    let mut runs = Vec::new();
    for (i, (label, act)) in corollary_activations().into_iter().enumerate() {
        for seed in 0..seeds.max(1) {
            let hidden = vec![w, w];
            let mut c = base_config(ModelSpec::Dnn { hidden }, n, d, m, lr, epochs, every);
            c.seed = seed;
            c.model.activation = act.clone();
            runs.push(RunSpec {
                label: format!("{i:02}-{label}-seed{seed}"),
                value: i,
                seed,
                config: c,
            });
        }
    }
    Ablation {
        name: "activations".into(),
        title: "Corollaries 3.1.1/3.1.2: leaky ReLU α → 0 (towards ReLU) and piecewise-linear sigmoids k → ∞".into(),
        variable: "activation".into(),
        skip_epochs: 0,
        runs,
    }
}

/// Sweeps for the architectures of the paper's "Applicability" list. Each crosses p = nm at small
/// sizes (the paper has no experiment for them, so `paper` scale only trains longer). Steps are
/// a fraction of GD's stability limit nm/λ_max(H(0)) of the widest run; GraphConv's unnormalised
/// neighbour sums make its NTK stiff (λ_max ≈ 4e6 against λ_min ≈ 1.6 at width 48), hence 3e-5.
fn architecture(name: &str, scale: Scale, seeds: u64) -> Option<Ablation> {
    use crate::layers::PairCombine;
    let epochs = match scale {
        Scale::Quick => 3000,
        Scale::Paper => 10_000,
    };
    let every = epochs / 6;
    let images = |n, c, h, w, m| DataConfig::Images {
        n,
        channels: c,
        height: h,
        width: w,
        m,
    };
    // (the run at swept value v, data, values, what is swept, step)
    type Sweep<'a> = (fn(usize) -> ModelSpec, DataConfig, Vec<usize>, &'a str, f64);
    let (spec, data, values, variable, lr): Sweep = match name {
        "cnn" => (
            |v| ModelSpec::Cnn {
                channels: vec![v, v],
                kernel: 3,
            },
            images(40, 1, 8, 8, 2),
            vec![1, 2, 3, 4, 8],
            "channels",
            0.05,
        ),
        "conv-resnet" => (
            |v| ModelSpec::ConvResnet {
                width: v,
                depth: 2,
                kernel: 3,
            },
            images(100, 1, 6, 6, 2),
            vec![1, 2, 3, 4, 6],
            "width",
            0.02,
        ),
        "unet" => (
            |v| ModelSpec::Unet {
                channels: vec![v, v],
                kernel: 3,
            },
            images(8, 1, 4, 4, 1),
            vec![1, 2, 3, 4],
            "channels",
            0.05,
        ),
        "mobilenet" => (
            |v| ModelSpec::Mobilenet {
                channels: vec![v, 2 * v],
                kernel: 3,
            },
            images(100, 3, 8, 8, 2),
            vec![1, 2, 3, 4, 6],
            "channels",
            0.05,
        ),
        "cheb" => (
            |v| ModelSpec::Cheb {
                hidden: vec![v, v],
                order: 3,
            },
            DataConfig::Ball {
                n: 100,
                d: 20,
                m: 5,
            },
            vec![2, 4, 6, 8, 16, 32],
            "width",
            0.05,
        ),
        "graphconv" => (
            |v| ModelSpec::GraphConv { hidden: vec![v, v] },
            DataConfig::Ball {
                n: 100,
                d: 20,
                m: 5,
            },
            vec![4, 6, 8, 12, 24, 48],
            "width",
            3e-5,
        ),
        "siamese" => (
            |v| ModelSpec::Siamese {
                hidden: vec![v, v],
                combine: PairCombine::AbsDiff,
            },
            DataConfig::Pairs {
                n: 100,
                d: 10,
                m: 5,
            },
            vec![6, 10, 16, 24, 48],
            "width",
            0.1,
        ),
        _ => return None,
    };
    let mut runs = Vec::new();
    for &v in &values {
        for seed in 0..seeds.max(1) {
            let mut c = base_config(spec(v), 0, 0, 0, lr, epochs, every);
            c.data = data.clone();
            c.seed = seed;
            runs.push(RunSpec {
                label: format!("{variable}={v}-seed{seed}"),
                value: v,
                seed,
                config: c,
            });
        }
    }
    Some(Ablation {
        name: name.into(),
        title: format!(
            "{}: loss against epoch, one curve per {variable}",
            spec(values[0]).preset().name()
        ),
        variable: variable.into(),
        skip_epochs: 0,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Solver;

    #[test]
    fn flow_sweeps_integrate_to_the_gd_horizon_with_translated_ntk_checkpoints() {
        let gd = ablation("dnn", Scale::Quick, 1).unwrap();
        let flow = as_flow(gd.clone());
        assert_eq!(flow.runs.len(), gd.runs.len());
        assert!(
            flow.title.starts_with("DNN (gradient flow):"),
            "{}",
            flow.title
        );
        for (g, f) in gd.runs.iter().zip(&flow.runs) {
            let (gc, fc) = (&g.config, &f.config);
            assert_eq!(gc.train.solver, Solver::Gd);
            assert_eq!(fc.train.solver, Solver::Flow);
            // Quick scale: 6000 epochs at lr 0.1, NTK every 500 epochs.
            assert_eq!(
                (gc.train.epochs, gc.train.lr, gc.ntk.every),
                (6000, 0.1, 500)
            );
            assert!((fc.train.flow.t_end - 600.0).abs() < 1e-9);
            assert_eq!(fc.train.flow.outputs, 200);
            // 500 of 6000 epochs = 1/12 of the run ≈ 16.67 of 200 outputs.
            assert_eq!(fc.ntk.every, 17);
            assert_eq!(fc.train.lr, gc.train.lr);
            assert_eq!(fc.model.arch, gc.model.arch);
        }
        // Few epochs: one output per epoch, and the NTK never less often than every output.
        let mut c = gd.runs[0].config.clone();
        c.train.epochs = 30;
        c.ntk.every = 0;
        to_flow(&mut c);
        assert_eq!((c.train.flow.outputs, c.ntk.every), (30, 0));
        let mut c = gd.runs[0].config.clone();
        c.train.epochs = 1000;
        c.ntk.every = 1;
        to_flow(&mut c);
        assert_eq!((c.train.flow.outputs, c.ntk.every), (200, 1));
    }

    #[test]
    fn reproduce_precision_applies_to_engine_presets_only() {
        use crate::config::Precision;
        use crate::experiment::{ablation, set_precision, Scale};
        let mut a = vec![
            ablation("dnn", Scale::Quick, 1).unwrap(),
            ablation("cnn", Scale::Quick, 1).unwrap(),
        ];
        set_precision(&mut a, Precision::F32);
        assert!(a[0]
            .runs
            .iter()
            .all(|r| r.config.train.precision == Precision::F32));
        assert!(a[1]
            .runs
            .iter()
            .all(|r| r.config.train.precision == Precision::F64));
    }
}
