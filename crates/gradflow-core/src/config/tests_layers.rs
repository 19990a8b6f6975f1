//! `[[model.layers]]` in config files: a list is read, checked against `[data]` and written back
//! unchanged; mistakes name the entry's path (`model.layers[1].layers[0]`), the line and the fix.

use super::tests::{fail, parse};
use super::*;

const IMAGES: &str =
    "[data]\nkind = \"images\"\nn = 4\nchannels = 1\nheight = 4\nwidth = 4\nm = 2\n";

fn images_with(model: &str) -> String {
    format!("{IMAGES}[model]\n{model}\n")
}

const GOOD: &str = r#"activation = "relu"
[[model.layers]]
kind = "conv2d"
out = 2
kernel = 3
padding = 1
[[model.layers]]
kind = "residual"
[[model.layers.layers]]
kind = "conv2d"
out = 2
kernel = 1
[[model.layers]]
kind = "concat"
branches = [[], [{ kind = "activation" }]]
[[model.layers]]
kind = "flatten"
[[model.layers]]
kind = "dense"
out = 2
bias = false"#;

#[test]
fn a_layer_list_is_read_and_written_back() {
    let c = parse(&images_with(GOOD)).unwrap();
    assert_eq!(c.model.preset(), None);
    let layers = c.model.layers().expect("a layer list");
    assert_eq!(layers.len(), 5);
    assert_eq!(layers[4].kind(), "dense");
    assert!(matches!(
        &layers[1],
        crate::spec::LayerSpec::Residual { layers, .. } if layers.len() == 1
    ));
    assert_eq!(c.model.activation, Activation::Relu);
    let back = parse(&c.to_toml()).unwrap();
    assert_eq!(back.model, c.model, "{}", c.to_toml());
}

/// (config, field, line when the error has one, needle of the fix).
#[test]
fn bad_layer_lists_name_the_entry_line_and_fix() {
    let cases: &[(String, &str, Option<usize>, &str)] = &[
        (
            images_with("preset = \"cnn\"\n[[model.layers]]\nkind = \"flatten\""),
            "model.layers",
            Some(10),
            "exclusive",
        ),
        (
            images_with("hidden = [3]\n[[model.layers]]\nkind = \"flatten\""),
            "model.hidden",
            Some(9),
            "preset key",
        ),
        (
            images_with("[[model.layers]]\nkind = \"dense\"\nout = 2"),
            "model.layers[0]",
            Some(9),
            "flatten",
        ),
        (
            images_with(
                "[[model.layers]]\nkind = \"residual\"\n[[model.layers.layers]]\nkind = \"conv2d\"\nout = 2\nkernel = 1\nstrid = 2",
            ),
            "model.layers[0].layers[0]",
            Some(11),
            "unknown field `strid`",
        ),
        (
            images_with(
                "[[model.layers]]\nkind = \"residual\"\n[[model.layers.layers]]\nkind = \"conv2d\"\nout = 3\nkernel = 1",
            ),
            "model.layers[0].layers",
            Some(11),
            "keep the shape",
        ),
        (
            images_with("[[model.layers]]\nkind = \"conv\"\nout = 2"),
            "model.layers[0]",
            Some(9),
            "unknown variant `conv`",
        ),
        (
            images_with("[[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"dense\"\nout = 3"),
            "model.layers",
            Some(9),
            "m = 2",
        ),
        (
            images_with("input = [1, 4, 5]\n[[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"dense\"\nout = 2"),
            "model.input",
            Some(9),
            "agree",
        ),
        (
            images_with("[[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"propagate\"\n[[model.layers]]\nkind = \"dense\"\nout = 2"),
            "graph.k",
            None,
            "add a [graph] section with a smaller k",
        ),
        (
            format!("{IMAGES}[graph]\nk = 2\n[model]\n[[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"dense\"\nout = 2"),
            "graph",
            Some(8),
            "remove it for a layer list",
        ),
        (
            images_with("[[model.layers]]\nkind = \"flatten\"\n[[model.layers]]\nkind = \"dense\"\nout = 2\n[train]\nprecision = \"f32\""),
            "train.precision",
            Some(15),
            "a layer list trains in f64",
        ),
        (
            images_with("init = \"kaiming\""),
            "model.preset",
            None,
            "[[model.layers]]",
        ),
    ];
    for (text, field, line, needle) in cases {
        let (got, message) = fail(text);
        assert_eq!(&got, field, "{text}\n→ {message}");
        assert!(
            message.contains(needle),
            "{text}\n→ {message} lacks {needle}"
        );
        if let Some(line) = line {
            assert!(
                message.contains(&format!("line {line}")),
                "{text}\n→ {message} lacks line {line}"
            );
        }
    }
}
