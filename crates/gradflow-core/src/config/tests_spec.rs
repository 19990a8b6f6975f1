//! Tests of the preset keys ([`ModelSpec`]): which keys each preset takes and the errors for the
//! others, against tables written out by hand; and the `[model]` section [`Config::to_toml`]
//! writes for every preset, against hand-written text (run directories and checkpoints compare
//! this text, so it must not change).

use super::tests::{fail, parse};
use super::*;

/// `[model]` of `text`'s resolved TOML: from its header to the blank line before `[train]`.
fn model_section(text: &str) -> String {
    let out = parse(text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .to_toml();
    let start = out.find("\n[model]\n").expect("a [model] section") + 1;
    let end = out.find("\n\n[train]\n").expect("a [train] section") + 1;
    out[start..end].to_string()
}

const BALL: &str = "[data]\nkind = \"ball\"\nn = 20\nd = 4\nm = 2\n";
const IMAGES: &str =
    "[data]\nkind = \"images\"\nn = 8\nchannels = 1\nheight = 8\nwidth = 8\nm = 2\n";
const PAIRS: &str = "[data]\nkind = \"pairs\"\nn = 8\nd = 3\nm = 2\n";
const LEAKY: &str = "activation = { kind = \"leaky-relu\", slope = 0.01 }\ninit = \"torch\"\n";

#[test]
fn written_model_section_of_every_preset() {
    // (data, [model] as given, the keys written between `preset` and `activation`)
    let cases = [
        (
            BALL,
            "preset = \"dnn\"\nhidden = [8, 8]",
            "hidden = [8, 8]\n",
        ),
        (BALL, "preset = \"resnet\"\ndepth = 2", "depth = 2\n"),
        (
            BALL,
            "preset = \"gcn\"\nhidden = [4, 5]",
            "hidden = [4, 5]\n",
        ),
        (
            IMAGES,
            "preset = \"cnn\"\nchannels = [4, 8]",
            "channels = [4, 8]\nkernel = 3\n",
        ),
        (
            IMAGES,
            "preset = \"conv-resnet\"\nkernel = 5\ndepth = 2\nchannels = [4]",
            "channels = [4]\ndepth = 2\nkernel = 5\n",
        ),
        (
            BALL,
            "preset = \"cheb\"\nhidden = [16]",
            "hidden = [16]\norder = 3\n",
        ),
        (
            BALL,
            "preset = \"cheb\"\norder = 2\nhidden = [3, 1]",
            "hidden = [3, 1]\norder = 2\n",
        ),
        (
            BALL,
            "preset = \"graphconv\"\nhidden = [6]",
            "hidden = [6]\n",
        ),
        (
            IMAGES,
            "preset = \"unet\"\nkernel = 1\nchannels = [4, 8]",
            "channels = [4, 8]\nkernel = 1\n",
        ),
        (
            IMAGES,
            "preset = \"mobilenet\"\nchannels = [8, 16]",
            "channels = [8, 16]\nkernel = 3\n",
        ),
        (
            PAIRS,
            "preset = \"siamese\"\nhidden = [16]",
            "hidden = [16]\ncombine = \"abs-diff\"\n",
        ),
        (
            PAIRS,
            "combine = \"concat\"\npreset = \"siamese\"\nhidden = [2, 3]",
            "hidden = [2, 3]\ncombine = \"concat\"\n",
        ),
    ];
    let mut seen = Vec::new();
    for (data, model, keys) in cases {
        let text = format!("{data}[model]\n{model}\n");
        let preset = model
            .lines()
            .find_map(|l| l.strip_prefix("preset = "))
            .expect("a preset line");
        assert_eq!(
            model_section(&text),
            format!("[model]\npreset = {preset}\n{keys}{LEAKY}"),
            "{text}"
        );
        seen.push(preset.trim_matches('"').to_string());
    }
    for p in Preset::ALL {
        assert!(seen.contains(&p.name().to_string()), "no case for {p}");
    }
}

/// The keys each preset takes, by hand (docs/theory.md and the module docs of `config`).
const TAKES: [(&str, &[&str]); 10] = [
    ("dnn", &["hidden"]),
    ("resnet", &["depth"]),
    ("gcn", &["hidden"]),
    ("cnn", &["channels", "kernel"]),
    ("conv-resnet", &["channels", "depth", "kernel"]),
    ("cheb", &["hidden", "order"]),
    ("graphconv", &["hidden"]),
    ("unet", &["channels", "kernel"]),
    ("mobilenet", &["channels", "kernel"]),
    ("siamese", &["hidden", "combine"]),
];

/// A valid `[data]` and `[model]` of every preset, with a value for every preset key.
fn valid(preset: &str) -> String {
    let (data, model) = match preset {
        "dnn" | "gcn" | "graphconv" => (BALL, "hidden = [3]"),
        "resnet" => (BALL, "depth = 2"),
        "cheb" => (BALL, "hidden = [3]"),
        "siamese" => (PAIRS, "hidden = [3]"),
        "conv-resnet" => (IMAGES, "channels = [3]\ndepth = 2"),
        _ => (IMAGES, "channels = [3]"),
    };
    format!("{data}[model]\npreset = \"{preset}\"\n{model}\n")
}

#[test]
fn keys_taken_by_each_preset() {
    let listed: Vec<&str> = TAKES.iter().map(|(name, _)| *name).collect();
    assert_eq!(listed, Preset::ALL.map(|p| p.name()), "a row per preset");
    for (name, keys) in TAKES {
        let p = Preset::from_name(name).unwrap();
        let mut taken = super::model::keys_taken_by(p);
        taken.sort_unstable();
        let mut expected = keys.to_vec();
        expected.sort_unstable();
        assert_eq!(taken, expected, "{name}");
        // and a valid config of the preset resolves to a spec of the same preset.
        let c = parse(&valid(name)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.model.spec().map(ModelSpec::preset), Some(p));
    }
}

/// Every key a preset does not take is an error naming the field, the presets that take it,
/// the fix and the line.
#[test]
fn every_key_a_preset_does_not_take_is_refused() {
    let users = [
        ("hidden", "presets dnn, gcn, cheb, graphconv and siamese"),
        ("depth", "presets resnet and conv-resnet"),
        ("channels", "presets cnn, conv-resnet, unet and mobilenet"),
        ("kernel", "presets cnn, conv-resnet, unet and mobilenet"),
        ("order", "preset cheb"),
        ("combine", "preset siamese"),
    ];
    let value = |key| match key {
        "hidden" | "channels" => "[3]",
        "combine" => "\"concat\"",
        _ => "3",
    };
    let mut refused = 0;
    for (name, keys) in TAKES {
        for (key, who) in users {
            if keys.contains(&key) {
                continue;
            }
            let text = format!("{}{key} = {}\n", valid(name), value(key));
            let line = text.lines().count();
            let (field, message) = fail(&text);
            assert_eq!(field, format!("model.{key}"), "{text}");
            let head = format!("`model.{key}` is only used by {who}; remove it (");
            assert!(message.starts_with(&head), "{message}");
            assert!(message.ends_with(&format!(") (line {line})")), "{message}");
            refused += 1;
        }
    }
    // 60 (preset, key) pairs less the 17 that are taken.
    assert_eq!(refused, 43);
}
