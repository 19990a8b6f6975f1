//! Tests of parsing, validation and the resolved-TOML round trip.

use super::*;
use crate::activation::PiecewisePolynomial;

const MINIMAL: &str = r#"
[data]
kind = "ball"
n = 20
d = 4
m = 2
[model]
preset = "dnn"
hidden = [8, 8]
"#;

pub(super) fn parse(text: &str) -> Result<Config> {
    Config::from_str(text, Path::new("test.toml"), Path::new("/base"))
}

/// (field, message) of a config error; panics on success or on another error kind.
pub(super) fn fail(text: &str) -> (String, String) {
    match parse(text) {
        Err(Error::Config {
            file,
            field,
            message,
        }) => {
            assert_eq!(file, "test.toml");
            (field, message)
        }
        other => panic!("expected a config error, got {other:?}"),
    }
}

pub(super) fn with_model(model: &str) -> String {
    format!("[data]\nkind = \"ball\"\nn = 20\nd = 4\nm = 2\n[model]\n{model}\n")
}

#[test]
fn defaults_filled() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.seed, 0);
    assert_eq!(c.data, DataConfig::Ball { n: 20, d: 4, m: 2 });
    assert_eq!(c.graph, None);
    assert_eq!(c.model.preset(), Some(Preset::Dnn));
    assert_eq!(
        c.model.arch,
        Architecture::Preset(ModelSpec::Dnn { hidden: vec![8, 8] })
    );
    assert_eq!(c.model.activation, Activation::LeakyRelu { slope: 0.01 });
    assert_eq!(c.model.init, InitScheme::Torch);
    assert_eq!(c.train, TrainConfig::default());
    assert_eq!(c.train.solver, Solver::Gd);
    assert_eq!(c.train.lr, 0.01);
    assert_eq!(c.train.epochs, 1000);
    assert_eq!(c.train.loss, LossKind::Mse);
    assert_eq!(c.train.precision, Precision::F64);
    assert_eq!(c.train.log_every, 1);
    assert_eq!(
        c.ntk,
        NtkConfig {
            every: 0,
            memory_budget_gb: 8.0,
            enabled: true
        }
    );
    assert_eq!(c.base_dir, PathBuf::from("/base"));
}

#[test]
fn gcn_gets_default_knn_graph() {
    let c = parse(&with_model("preset = \"gcn\"\nhidden = [4]")).unwrap();
    assert_eq!(c.graph, Some(GraphConfig::Knn { k: DEFAULT_K }));
    let c = parse(&format!(
        "{}[graph]\nedges = \"e.csv\"\n",
        with_model("preset = \"gcn\"\nhidden = [4]")
    ))
    .unwrap();
    assert_eq!(
        c.graph,
        Some(GraphConfig::Edges {
            path: PathBuf::from("/base/e.csv")
        })
    );
}

#[test]
fn misspelt_key_is_named() {
    let (field, message) = fail(&with_model("preset = \"dnn\"\nhiden = [8]"));
    assert_eq!(field, "model.hiden");
    assert!(message.contains("unknown field `hiden`"), "{message}");
    assert!(message.contains("line 8"), "{message}");
    let (field, _) = fail(&format!("{MINIMAL}[train]\nepoch = 3\n"));
    assert_eq!(field, "train.epoch");
    let (field, _) = fail(&format!("{MINIMAL}[tran]\nepochs = 3\n"));
    assert_eq!(field, "tran");
}

#[test]
fn syntax_and_type_errors() {
    let (field, message) = fail("[data\nkind = \"ball\"\n");
    assert_eq!(field, "(syntax)");
    assert!(message.contains("line 1"), "{message}");
    let (field, _) = fail(&format!("{MINIMAL}[train]\nlr = \"fast\"\n"));
    assert_eq!(field, "train.lr");
    let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = [8, -1]"));
    assert_eq!(field, "model.hidden");
    let (field, _) = fail("seed = 1\n[model]\npreset = \"dnn\"\nhidden = [3]\n");
    assert_eq!(field, "data");
    let (field, _) = fail("[data]\nn = 3\n[model]\npreset = \"dnn\"\nhidden = [3]\n");
    assert_eq!(field, "data.kind");
    let (field, message) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [3]\nactivation = { kind = \"leaky-relu\", slop = 0.1 }",
    ));
    assert_eq!(field, "model.activation.slop");
    assert!(message.contains("unknown field `slop`"), "{message}");
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [3]\nactivation = 3",
    ));
    assert_eq!(field, "model.activation");
}

#[test]
fn missing_data_n_is_named() {
    let (field, message) =
        fail("[data]\nkind = \"ball\"\nd = 4\nm = 2\n[model]\npreset = \"dnn\"\nhidden = [8]\n");
    assert_eq!(field, "data.n");
    assert!(message.contains("required"), "{message}");
    assert!(message.contains("(in `data` at line 1)"), "{message}");
    let (field, _) = fail(&MINIMAL.replace("d = 4", "d = 0"));
    assert_eq!(field, "data.d");
    let (field, _) = fail(&MINIMAL.replace("m = 2", "m = 2\nx = \"x.npy\""));
    assert_eq!(field, "data.x");
}

#[test]
fn npy_paths_resolved() {
    let text = "[data]\nkind = \"npy\"\nx = \"data/x.npy\"\ny = \"/abs/y.npy\"\n[model]\npreset = \"dnn\"\nhidden = [3]\n";
    let c = parse(text).unwrap();
    assert_eq!(
        c.data,
        DataConfig::Npy {
            x: PathBuf::from("/base/data/x.npy"),
            y: PathBuf::from("/abs/y.npy")
        }
    );
    let (field, _) = fail(&text.replace("x = \"data/x.npy\"\n", ""));
    assert_eq!(field, "data.x");
    let (field, _) = fail(&text.replace("kind = \"npy\"", "kind = \"npy\"\nn = 3"));
    assert_eq!(field, "data.n");
}

#[test]
fn bad_lr_is_named() {
    for lr in ["0", "-1", "0.0", "nan", "inf"] {
        let (field, message) = fail(&format!("{MINIMAL}[train]\nlr = {lr}\n"));
        assert_eq!(field, "train.lr", "lr = {lr}");
        assert!(message.contains("step must be positive"), "{message}");
    }
    // An integer step is accepted as a float.
    let c = parse(&format!("{MINIMAL}[train]\nlr = 1\nepochs = 0\n")).unwrap();
    assert_eq!((c.train.lr, c.train.epochs), (1.0, 0));
}

#[test]
fn unused_keys_are_errors() {
    let (field, message) = fail(&with_model("preset = \"dnn\"\nhidden = [8]\ndepth = 3"));
    assert_eq!(field, "model.depth");
    assert!(
        message.contains("only used by presets resnet and conv-resnet; remove it"),
        "{message}"
    );
    let (field, _) = fail(&with_model("preset = \"resnet\"\nhidden = [8]\ndepth = 3"));
    assert_eq!(field, "model.hidden");
    let (field, message) = fail(&format!("{MINIMAL}[graph]\nk = 3\n"));
    assert_eq!(field, "graph");
    assert!(message.contains("remove it"), "{message}");
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"relu\", slope = 0.1 }",
    ));
    assert_eq!(field, "model.activation.slope");
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\ninit = { kind = \"torch\", std = 0.1 }",
    ));
    assert_eq!(field, "model.init.std");
}

#[test]
fn preset_choices() {
    // cnn is available now: its keys are checked rather than the preset refused.
    let (field, message) = fail(&with_model("preset = \"cnn\"\nhidden = [8]"));
    assert_eq!(field, "model.hidden");
    assert!(
        message.contains("only used by presets dnn, gcn, cheb, graphconv and siamese"),
        "{message}"
    );
    let (field, message) = fail(&with_model("preset = \"mlp\"\nhidden = [8]"));
    assert_eq!(field, "model.preset");
    assert!(message.contains("available: dnn, resnet, gcn"), "{message}");
    let c = parse(&with_model("preset = \"resnet\"\ndepth = 3")).unwrap();
    assert_eq!(
        c.model.arch,
        Architecture::Preset(ModelSpec::Resnet { depth: 3 })
    );
    let (field, _) = fail(&with_model("preset = \"resnet\""));
    assert_eq!(field, "model.depth");
    let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = []"));
    assert_eq!(field, "model.hidden");
    let (field, _) = fail(&with_model("preset = \"dnn\"\nhidden = [3, 0]"));
    assert_eq!(field, "model.hidden");
}

#[test]
fn graph_checks() {
    let gcn =
        "[data]\nkind = \"ball\"\nn = 5\nd = 4\nm = 2\n[model]\npreset = \"gcn\"\nhidden = [4]\n";
    let (field, message) = fail(gcn);
    assert_eq!(field, "graph.k");
    assert!(
        message.contains("`graph.k` = 10 must be smaller than `data.n` = 5"),
        "{message}"
    );
    assert_eq!(
        parse(&format!("{gcn}[graph]\nk = 2\n")).unwrap().graph,
        Some(GraphConfig::Knn { k: 2 })
    );
    let (field, _) = fail(&format!("{gcn}[graph]\nk = 2\nedges = \"e.csv\"\n"));
    assert_eq!(field, "graph");
    let (field, _) = fail(&format!("{gcn}[graph]\nk = 0\n"));
    assert_eq!(field, "graph.k");
}

#[test]
fn train_and_ntk_checks() {
    let (field, message) = fail(&format!("{MINIMAL}[train]\nsolver = \"rk4\"\n"));
    assert_eq!(field, "train.solver");
    assert!(message.contains("available: gd"), "{message}");
    let (field, _) = fail(&format!("{MINIMAL}[train]\nloss = \"l1\"\n"));
    assert_eq!(field, "train.loss");
    let (field, _) = fail(&format!("{MINIMAL}[train]\nlog_every = 0\n"));
    assert_eq!(field, "train.log_every");
    let (field, _) = fail(&format!("{MINIMAL}[ntk]\nmemory_budget_gb = 0\n"));
    assert_eq!(field, "ntk.memory_budget_gb");
    let c = parse(&format!(
        "{MINIMAL}[train]\nloss = \"half-sse\"\n[ntk]\nevery = 5\nenabled = false\n"
    ))
    .unwrap();
    assert_eq!(c.train.loss, LossKind::HalfSse);
    assert_eq!((c.ntk.every, c.ntk.enabled), (5, false));
}

#[test]
fn activation_forms() {
    let act = |a: &str| {
        parse(&with_model(&format!(
            "preset = \"dnn\"\nhidden = [8]\nactivation = {a}"
        )))
        .unwrap()
        .model
        .activation
    };
    assert_eq!(act("\"leaky-relu\""), Activation::LeakyRelu { slope: 0.01 });
    assert_eq!(act("\"prelu\""), Activation::Prelu { init: 0.25 });
    assert_eq!(act("\"relu\""), Activation::Relu);
    assert_eq!(act("\"sigmoid\""), Activation::Sigmoid);
    assert_eq!(
        act("{ kind = \"leaky-relu\", slope = 0.2 }"),
        Activation::LeakyRelu { slope: 0.2 }
    );
    assert_eq!(
        act("{ kind = \"leaky-relu\" }"),
        Activation::LeakyRelu { slope: 0.01 }
    );
    assert_eq!(
        act("{ kind = \"prelu\", init = 0.1 }"),
        Activation::Prelu { init: 0.1 }
    );
    assert_eq!(act("{ kind = \"relu\" }"), Activation::Relu);
    assert_eq!(
        act("{ kind = \"piecewise\", breakpoints = [0.0], coefficients = [[0.0, 0.1], [0.0, 1.0, 1.0]] }"),
        Activation::Piecewise(PiecewisePolynomial {
            breakpoints: vec![0.0],
            coefficients: vec![vec![0.0, 0.1], vec![0.0, 1.0, 1.0]],
        })
    );
    // The sub-table form works as well as the inline one.
    let c = parse(&format!(
        "{MINIMAL}[model.activation]\nkind = \"leaky-relu\"\nslope = 0.3\n"
    ))
    .unwrap();
    assert_eq!(c.model.activation, Activation::LeakyRelu { slope: 0.3 });
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\nactivation = \"tanh\"",
    ));
    assert_eq!(field, "model.activation");
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"leaky-relu\", slope = nan }",
    ));
    assert_eq!(field, "model.activation.slope");
}

#[test]
fn init_forms() {
    let init = |i: &str| {
        parse(&with_model(&format!(
            "preset = \"dnn\"\nhidden = [8]\ninit = {i}"
        )))
    };
    assert_eq!(
        init("\"kaiming-normal\"").unwrap().model.init,
        InitScheme::KaimingNormal
    );
    assert_eq!(
        init("{ kind = \"normal\", std = 0.1 }").unwrap().model.init,
        InitScheme::Normal { std: 0.1 }
    );
    for bad in [
        "{ kind = \"normal\", std = 0.0 }",
        "{ kind = \"normal\", std = -1.0 }",
    ] {
        match init(bad) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "model.init.std"),
            other => panic!("{other:?}"),
        }
    }
    match init("\"normal\"") {
        Err(Error::Config { field, .. }) => assert_eq!(field, "model.init"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn discontinuous_piecewise_is_named() {
    let (field, message) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"piecewise\", breakpoints = [0.0], coefficients = [[1.0], [0.0, 1.0]] }",
    ));
    assert_eq!(field, "model.activation");
    assert!(message.contains("discontinuous"), "{message}");
    let (field, _) = fail(&with_model(
        "preset = \"dnn\"\nhidden = [8]\nactivation = { kind = \"piecewise\", breakpoints = [0.0] }",
    ));
    assert_eq!(field, "model.activation.coefficients");
}

#[test]
fn to_toml_round_trip() {
    let base = Path::new("/base");
    let texts = [
        MINIMAL.to_string(),
        format!(
            "seed = 7\n{}[graph]\nk = 3\n[train]\nlr = 0.1\nepochs = 5\nloss = \"half-sse\"\n[ntk]\nevery = 2\nmemory_budget_gb = 0.5\nenabled = false\n",
            with_model("preset = \"gcn\"\nhidden = [4, 5]\nactivation = { kind = \"piecewise\", breakpoints = [-1.0, 1.0], coefficients = [[-0.5], [0.0, 0.5], [0.5]] }\ninit = { kind = \"normal\", std = 0.3 }")
        ),
        format!("{}[graph]\nedges = \"g/e.csv\"\n", with_model("preset = \"gcn\"\nhidden = [4]\nactivation = \"prelu\"")),
        with_model("preset = \"resnet\"\ndepth = 2\nactivation = \"sigmoid\"\ninit = \"kaiming-normal\""),
        "[data]\nkind = \"npy\"\nx = \"x.npy\"\ny = \"sub dir/y \\\"q\\\".npy\"\n[model]\npreset = \"dnn\"\nhidden = [3]\nactivation = \"relu\"\n[train]\nlr = 1e-7\n".to_string(),
    ];
    for text in texts {
        let c = parse(&text).unwrap();
        let out = c.to_toml();
        let back = Config::from_str(&out, Path::new("resolved.toml"), base)
            .unwrap_or_else(|e| panic!("{e}\n{out}"));
        let back = Config {
            source: c.source.clone(),
            ..back
        };
        assert_eq!(back, c, "{out}");
        assert!(out.contains("activation = { kind = "), "{out}");
    }
}

#[test]
fn examples_parse() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.extension().is_some_and(|e| e == "toml") && name != "dnn_npy.toml" {
            let c = Config::from_path(&path).unwrap_or_else(|e| panic!("{e}"));
            let back = Config::from_str(&c.to_toml(), &path, &c.base_dir).unwrap();
            assert_eq!(back, c, "{name}");
            seen += 1;
        }
    }
    assert!(
        seen >= 4,
        "expected the example configs in {}",
        dir.display()
    );
    // dnn_npy only needs its data files; the config itself must be valid.
    let c = Config::from_path(&dir.join("dnn_npy.toml")).unwrap();
    assert!(matches!(c.data, DataConfig::Npy { .. }));
}

/// The flow keys: defaults (t_end = lr·epochs), round trip through the written TOML, and
/// errors naming the field for bad values or for flow keys given to solver = "gd".
#[test]
fn flow_keys() {
    let c = parse(&format!(
        "{MINIMAL}[train]\nsolver = \"flow\"\nlr = 0.05\nepochs = 40\n"
    ))
    .unwrap();
    assert_eq!(c.train.solver, Solver::Flow);
    assert_eq!(c.train.flow.t_end, 0.05 * 40.0);
    assert_eq!(c.train.flow.rtol, 1e-8);
    let text = format!(
        "{MINIMAL}[train]\nsolver = \"flow\"\nt_end = 2.5\nrtol = 1e-9\natol = 1e-11\noutputs = 7\nkink_aware = false\ncompare_gd = true\n"
    );
    let c = parse(&text).unwrap();
    let f = &c.train.flow;
    assert_eq!(
        (
            f.t_end,
            f.rtol,
            f.atol,
            f.outputs,
            f.kink_aware,
            f.compare_gd
        ),
        (2.5, 1e-9, 1e-11, 7, false, true)
    );
    let again = parse(&c.to_toml()).unwrap();
    assert_eq!(again.train, c.train);
    for (extra, field) in [
        ("t_end = 0.0", "train.t_end"),
        ("t_end = -1.0", "train.t_end"),
        ("rtol = 1.5", "train.rtol"),
        ("rtol = 0.0", "train.rtol"),
        ("atol = 0.0", "train.atol"),
        ("outputs = 0", "train.outputs"),
    ] {
        let (got, _) = fail(&format!("{MINIMAL}[train]\nsolver = \"flow\"\n{extra}\n"));
        assert_eq!(got, field, "{extra}");
    }
    let (field, message) = fail(&format!("{MINIMAL}[train]\nt_end = 3.0\n"));
    assert_eq!(field, "train.t_end");
    assert!(message.contains("solver = \"flow\""), "{message}");
    let (field, _) = fail(&format!(
        "{MINIMAL}[train]\nsolver = \"flow\"\nprecision = \"f32\"\n"
    ));
    assert_eq!(field, "train.precision");
}

#[test]
fn f32_precision_only_for_engine_presets() {
    let c = parse(&format!("{MINIMAL}[train]\nprecision = \"f32\"\n")).unwrap();
    assert_eq!(c.train.precision, Precision::F32);
    let back = parse(&c.to_toml()).unwrap();
    assert_eq!(back.train.precision, Precision::F32);
    let cnn = "[data]\nkind = \"images\"\nn = 4\nchannels = 1\nheight = 4\nwidth = 4\nm = 2\n\
               [model]\npreset = \"cnn\"\nchannels = [2]\nkernel = 3\n[train]\nprecision = \"f32\"\n";
    let (field, message) = fail(cnn);
    assert_eq!(field, "train.precision");
    assert!(
        message.contains("dnn, resnet, gcn") && message.contains("preset cnn"),
        "{message}"
    );
    let (field, message) = fail(&format!("{MINIMAL}[train]\nprecision = \"f16\"\n"));
    assert_eq!(field, "train.precision");
    assert!(message.contains("available: f64, f32"), "{message}");
}
