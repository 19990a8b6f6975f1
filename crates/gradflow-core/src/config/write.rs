//! Writing the resolved config back as TOML ([`Config::to_toml`]).

use super::*;
use std::fmt::Write as _;

impl Config {
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
            DataConfig::Images {
                n,
                channels,
                height,
                width,
                m,
            } => {
                let _ = writeln!(
                    w,
                    "kind = \"images\"\nn = {n}\nchannels = {channels}\nheight = {height}\nwidth = {width}\nm = {m}"
                );
            }
            DataConfig::Pairs { n, d, m } => {
                let _ = writeln!(w, "kind = \"pairs\"\nn = {n}\nd = {d}\nm = {m}");
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
        let _ = writeln!(w, "\n[model]");
        if let Architecture::Preset(spec) = &m.arch {
            let _ = writeln!(w, "preset = \"{}\"", spec.preset().name());
            for (key, value) in spec.keys() {
                let _ = writeln!(w, "{key} = {value}");
            }
        }
        let _ = writeln!(w, "activation = {}", activation_toml(&m.activation));
        let _ = writeln!(w, "init = {}", init_toml(&m.init));
        if let Architecture::Layers(layers) = &m.arch {
            let _ = write!(w, "{}", layers_toml(layers));
        }
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
        if t.solver == super::Solver::Flow {
            let f = &t.flow;
            let _ = writeln!(
                w,
                "t_end = {}\nrtol = {}\natol = {}\noutputs = {}\nkink_aware = {}\ncompare_gd = {}",
                toml_float(f.t_end),
                toml_float(f.rtol),
                toml_float(f.atol),
                f.outputs,
                f.kink_aware,
                f.compare_gd
            );
        }
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

/// `[[model.layers]]` tables of a layer list, as serde writes them (nested lists as
/// `[[model.layers.layers]]`, concat branches as inline arrays).
fn layers_toml(layers: &[crate::spec::LayerSpec]) -> String {
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        model: Model<'a>,
    }
    #[derive(serde::Serialize)]
    struct Model<'a> {
        layers: &'a [crate::spec::LayerSpec],
    }
    let doc = Doc {
        model: Model { layers },
    };
    let text = toml::to_string(&doc).expect("a layer list serialises to TOML");
    format!("\n{text}")
}
