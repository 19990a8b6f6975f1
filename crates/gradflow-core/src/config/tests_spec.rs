//! Tests of the preset keys as written back: the `[model]` section [`Config::to_toml`] writes for
//! every preset, compared with text written out by hand (run directories and checkpoints compare
//! this text, so it must not change).

use super::tests::parse;
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
