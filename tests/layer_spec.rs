//! Layer-list models (`crate::spec`): a list equal to a preset builds a bit-for-bit identical
//! model (forward, θ₀ from the same seed, NTK and its route), parameters are named like PyTorch
//! module paths with (shape, offset) as computed by hand, and bad lists give errors that name
//! the entry's path and the fix.

mod common;

use common::{random_batch, rng};
use gradflow::activation::Activation;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{ImageShape, PairCombine};
use gradflow::model::Model;
use gradflow::spec::{model_from_json, SpecModel};
use gradflow::{ntk, presets, Error};
use std::path::Path;

fn build(json: &str) -> SpecModel {
    model_from_json(json, None).unwrap_or_else(|e| panic!("{json}: {e}"))
}

/// Same tensors (shapes, roles, fan-ins), same θ₀ from one seed, bitwise-equal outputs and NTK
/// (and the same NTK route) on random inputs.
fn assert_same_model(spec: &Model, preset: &Model, in_dim: usize, n: usize, seed: u64) {
    let (a, b) = (spec.param_specs(), preset.param_specs());
    assert_eq!(a.len(), b.len(), "number of tensors");
    for (s, t) in a.iter().zip(&b) {
        assert_eq!(
            (&s.shape, &s.role),
            (&t.shape, &t.role),
            "{} vs {}",
            s.name,
            t.name
        );
    }
    let theta = init_params(&a, &InitScheme::Torch, seed);
    let theta_preset = init_params(&b, &InitScheme::Torch, seed);
    assert_eq!(theta, theta_preset, "θ₀");
    let x = random_batch(&mut rng(seed + 1), in_dim, n);
    let (y, y_preset) = (spec.outputs(&theta, &x), preset.outputs(&theta, &x));
    assert_eq!(y.as_slice(), y_preset.as_slice(), "forward");
    let (h, route) = ntk::gram(spec, &theta, &x);
    let (h_preset, route_preset) = ntk::gram(preset, &theta, &x);
    assert_eq!(route, route_preset, "NTK route");
    for i in 0..h.nrows() {
        for j in 0..h.ncols() {
            assert_eq!(
                h[(i, j)].to_bits(),
                h_preset[(i, j)].to_bits(),
                "H[{i}, {j}]"
            );
        }
    }
}

#[test]
fn dense_list_equals_the_dnn_preset() {
    let s = build(
        r#"{"input": 5, "layers": [
            {"kind": "dense", "out": 7}, {"kind": "activation"},
            {"kind": "dense", "out": 6}, {"kind": "activation"},
            {"kind": "dense", "out": 3}]}"#,
    );
    let preset = presets::dnn(5, &[7, 6], 3, &Activation::leaky_relu());
    assert_same_model(&s.model, &preset, 5, 6, 11);
    // Names as PyTorch's nn.Sequential inside a `layers` attribute; offsets by hand:
    // 7·5 = 35 weights, 7 biases, then 6·7 = 42, 6, then 3·6 = 18, 3.
    let index = s.model.param_index();
    let want = [
        ("layers.0.weight", vec![7, 5], 0),
        ("layers.0.bias", vec![7], 35),
        ("layers.2.weight", vec![6, 7], 42),
        ("layers.2.bias", vec![6], 84),
        ("layers.4.weight", vec![3, 6], 90),
        ("layers.4.bias", vec![3], 108),
    ];
    assert_eq!(index.len(), want.len());
    for (name, shape, offset) in want {
        assert_eq!(index.get(name), Some(&(shape, offset)), "{name}");
    }
    assert_eq!(s.model.p(), 111);
}

#[test]
fn residual_list_equals_the_resnet_preset() {
    let block = r#"{"kind": "residual", "layers": [{"kind": "dense", "out": 4}, {"kind": "activation", "activation": "relu"}]}"#;
    let json = format!(
        r#"{{"input": 4, "activation": "relu", "layers": [{block}, {block}, {block}, {{"kind": "dense", "out": 2}}]}}"#
    );
    let s = build(&json);
    let preset = presets::resnet(4, 3, 2, &Activation::Relu);
    assert_same_model(&s.model, &preset, 4, 5, 12);
    let index = s.model.param_index();
    assert_eq!(index["layers.1.layers.0.weight"], (vec![4, 4], 20));
    assert_eq!(index["layers.3.bias"], (vec![2], 60 + 8));
}

#[test]
fn conv_list_equals_the_cnn_preset() {
    let s = build(
        r#"{"input": [2, 6, 6], "layers": [
            {"kind": "conv2d", "out": 3, "kernel": 3, "padding": 1}, {"kind": "activation"},
            {"kind": "avgpool2d", "kernel": 2},
            {"kind": "conv2d", "out": 4, "kernel": 3, "padding": 1}, {"kind": "activation"},
            {"kind": "avgpool2d", "kernel": 2},
            {"kind": "flatten"},
            {"kind": "dense", "out": 3}]}"#,
    );
    let a = Activation::leaky_relu();
    let preset = presets::cnn(ImageShape::new(2, 6, 6), &[3, 4], 3, 3, &a);
    assert_same_model(&s.model, &preset, 72, 4, 13);
    // flatten adds no layer: the dense read-out is entry 7 and sees 4·1·1 features.
    assert_eq!(s.model.param_index()["layers.7.weight"].0, vec![3, 4]);
}

#[test]
fn graph_and_pair_lists_equal_the_gcn_and_siamese_presets() {
    let n = 9;
    let x = random_batch(&mut rng(5), 3, n);
    let graph = Graph::knn(&x, 3).unwrap();
    let s = model_from_json(
        r#"{"input": 3, "layers": [
            {"kind": "propagate"}, {"kind": "dense", "out": 5}, {"kind": "activation"},
            {"kind": "propagate"}, {"kind": "dense", "out": 2}]}"#,
        Some(&graph),
    )
    .unwrap();
    let a = Activation::leaky_relu();
    let preset = presets::gcn(
        std::sync::Arc::new(graph.normalized_adjacency()),
        3,
        &[5],
        2,
        &a,
    );
    // The same samples the graph was built on (graph layers mix samples).
    let theta = s.init_params(3);
    let (y, yp) = (s.model.outputs(&theta, &x), preset.outputs(&theta, &x));
    assert_eq!(y.as_slice(), yp.as_slice());
    let (h, _) = ntk::gram(&s.model, &theta, &x);
    let (hp, _) = ntk::gram(&preset, &theta, &x);
    assert_eq!(h.as_ref(), hp.as_ref());

    let s = build(
        r#"{"input": 6, "layers": [
            {"kind": "shared-pair", "combine": "concat", "tower": [{"kind": "dense", "out": 4}, {"kind": "activation"}]},
            {"kind": "dense", "out": 2}]}"#,
    );
    let preset = presets::siamese(3, &[4], PairCombine::Concat, 2, &a);
    assert_same_model(&s.model, &preset, 6, 4, 14);
    assert_eq!(
        s.model.param_index()["layers.0.tower.0.weight"],
        (vec![4, 3], 0)
    );
}

#[test]
fn names_concat_branches_and_options() {
    let s = build(
        r#"{"input": [2, 4, 4], "init": "kaiming-normal", "layers": [
            {"kind": "conv2d", "out": 4, "kernel": 3, "padding": 1, "bias": false, "name": "stem"},
            {"kind": "concat", "branches": [[], [
                {"kind": "conv2d", "out": 2, "kernel": 1, "groups": 2, "name": "mix"},
                {"kind": "activation", "activation": "prelu"}]]},
            {"kind": "maxpool2d", "kernel": 2},
            {"kind": "upsample", "factor": 2},
            {"kind": "flatten"},
            {"kind": "dense", "out": 1, "bias": false}]}"#,
    );
    assert_eq!(s.init, InitScheme::KaimingNormal);
    let index = s.model.param_index();
    // stem: 4·2·3·3 = 72 weights, no bias; mix: [2, 4/2, 1, 1] + 2 biases; PReLU slope;
    // the concat gives 4 + 2 = 6 channels, 6·4·4 = 96 features into the dense read-out.
    let want = [
        ("stem.weight", vec![4, 2, 3, 3], 0),
        ("mix.weight", vec![2, 2, 1, 1], 72),
        ("mix.bias", vec![2], 76),
        ("layers.1.branches.1.1.weight", vec![1], 78),
        ("layers.5.weight", vec![1, 96], 79),
    ];
    assert_eq!(index.len(), want.len(), "{index:?}");
    for (name, shape, offset) in want {
        assert_eq!(index.get(name), Some(&(shape, offset)), "{name}");
    }
    assert_eq!(s.model.p(), 175);
    assert_eq!(s.model.out_dim(), 1);
}

fn error_of(json: &str) -> (String, String) {
    match model_from_json(json, None) {
        Err(Error::Config { field, message, .. }) => (field, message),
        Err(e) => panic!("{json}: not a config error: {e}"),
        Ok(_) => panic!("{json}: accepted"),
    }
}

#[test]
fn bad_lists_name_the_entry_and_the_fix() {
    let cases: &[(&str, &str, &str)] = &[
        (
            r#"{"input": [1, 4, 4], "layers": [{"kind": "dense", "out": 2}]}"#,
            "layers[0]",
            "flatten",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "conv2d", "out": 2, "kernel": 3}]}"#,
            "layers[0]",
            "images",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "dense", "out": 4}, {"kind": "residual", "layers": [{"kind": "activation"}, {"kind": "dense", "out": 3}]}]}"#,
            "layers[1].layers",
            "keep the shape",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "residual", "layers": [{"kind": "dense", "outt": 4}]}]}"#,
            "layers[0].layers[0]",
            "unknown field `outt`",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "dense", "out": 2}, {"kind": "dens", "out": 2}]}"#,
            "layers[1]",
            "unknown variant `dens`",
        ),
        (
            r#"{"input": [3, 4, 4], "layers": [{"kind": "conv2d", "out": 4, "kernel": 1, "groups": 2}]}"#,
            "layers[0].groups",
            "must divide",
        ),
        (
            r#"{"input": [1, 4, 4], "layers": [{"kind": "conv2d", "out": 1, "kernel": 5}]}"#,
            "layers[0].kernel",
            "does not fit",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "propagate"}]}"#,
            "layers[0]",
            "[graph]",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "flatten"}]}"#,
            "layers[0]",
            "remove it",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "dense", "out": 4}, {"kind": "shared-pair", "tower": []}]}"#,
            "layers[1]",
            "first layer",
        ),
        (
            r#"{"input": [2, 4, 4], "layers": [{"kind": "concat", "branches": [[], [{"kind": "flatten"}]]}]}"#,
            "layers[0].branches[1]",
            "one height and width",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "activation", "activation": "tanh"}]}"#,
            "layers[0].activation",
            "unknown activation `tanh`",
        ),
        (
            r#"{"input": 4, "layers": [{"kind": "dense", "out": 2, "name": "a"}, {"kind": "dense", "out": 2, "name": "a"}]}"#,
            "layers",
            "`a.weight`",
        ),
        (r#"{"layers": []}"#, "(json)", "missing field `input`"),
    ];
    for (json, field, hint) in cases {
        let (got_field, message) = error_of(json);
        assert_eq!(&got_field, field, "{json}: {message}");
        assert!(message.contains(hint), "{json}: `{message}` lacks `{hint}`");
    }
}

/// Through the config: a `[[model.layers]]` file and the matching preset file give the same
/// data, θ₀ and outputs from one seed (run::prepare, as every command does).
#[test]
fn config_layer_lists_prepare_the_same_run_as_presets() {
    use gradflow::config::Config;
    use std::path::Path;
    let data =
        "seed = 3\n[data]\nkind = \"images\"\nn = 5\nchannels = 2\nheight = 4\nwidth = 4\nm = 2\n";
    let preset = format!("{data}[model]\npreset = \"cnn\"\nchannels = [3]\n");
    let layers = format!(
        "{data}[model]\n[[model.layers]]\nkind = \"conv2d\"\nout = 3\nkernel = 3\npadding = 1\n\
         [[model.layers]]\nkind = \"activation\"\n[[model.layers]]\nkind = \"avgpool2d\"\nkernel = 2\n\
         [[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"dense\"\nout = 2\n"
    );
    let prep = |text: &str| {
        let c = Config::from_str(text, Path::new("t.toml"), Path::new(".")).unwrap();
        gradflow::run::prepare(&c).unwrap()
    };
    let (a, b) = (prep(&layers), prep(&preset));
    assert_eq!(a.model.preset, None);
    assert_eq!(a.data.x.as_slice(), b.data.x.as_slice());
    assert_eq!(a.theta0, b.theta0);
    let (ya, yb) = (
        a.model.outputs(&a.theta0, &a.data.x),
        b.model.outputs(&b.theta0, &b.data.x),
    );
    assert_eq!(ya.as_slice(), yb.as_slice());
    let names: Vec<String> = a.model.param_specs().into_iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "layers.0.weight",
            "layers.0.bias",
            "layers.4.weight",
            "layers.4.bias"
        ]
    );
}

/// `gradflow train examples/layers.toml` runs to completion; p = 299 by hand: conv 1→4 3×3
/// (36 + 4), residual conv 4→4 3×3 (144 + 4), grouped 1×1 conv 4→4 in 2 groups (8 + 4), dense
/// 32 → 3 (96 + 3); the saved tensors carry the list's names and the loss goes down.
#[test]
fn the_cli_trains_the_layer_list_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("gradflow-layer-spec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_gradflow"))
        .args(["train", "examples/layers.toml", "--out"])
        .arg(&out)
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["status"], "completed");
    assert_eq!(summary["p"], 299);
    // Loading checks every tensor's name and shape against the list's model.
    let config = gradflow::config::Config::from_path(&root.join("examples/layers.toml")).unwrap();
    let prep = gradflow::run::prepare(&config).unwrap();
    let specs = prep.model.param_specs();
    let theta = gradflow::params::load(&out.join("params_final.safetensors"), &specs).unwrap();
    assert_eq!(theta.len(), 299);
    let index = prep.model.param_index();
    assert_eq!(index["layers.3.layers.0.weight"], (vec![4, 4, 3, 3], 40));
    assert_eq!(
        index["layers.4.branches.1.0.weight"],
        (vec![4, 2, 1, 1], 188)
    );
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let loss = |line: &str| line.split(',').nth(2).unwrap().parse::<f64>().unwrap();
    let rows: Vec<&str> = metrics.lines().skip(1).collect();
    assert!(loss(rows[rows.len() - 1]) < loss(rows[0]), "{metrics}");
    std::fs::remove_dir_all(&out).unwrap();
}
