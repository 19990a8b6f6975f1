//! Tests of the architecture presets beyond dnn/resnet/gcn: image and pair data, the keys
//! `channels`, `kernel`, `order`, `combine`, their defaults, cross-checks and round trips.

use super::tests::{fail, parse, with_model};
use super::*;

/// 32 images 1×8×8 with m = 3, then `[model]` with `model`.
fn images(model: &str) -> String {
    images_sized(8, 8, model)
}

fn images_sized(height: usize, width: usize, model: &str) -> String {
    format!(
        "[data]\nkind = \"images\"\nn = 32\nchannels = 1\nheight = {height}\nwidth = {width}\nm = 3\n[model]\n{model}\n"
    )
}

/// 40 pairs of halves in R^6 with m = 2, then `[model]` with `model`.
fn pairs(model: &str) -> String {
    format!("[data]\nkind = \"pairs\"\nn = 40\nd = 6\nm = 2\n[model]\n{model}\n")
}

#[test]
fn preset_api() {
    assert_eq!(Preset::ALL.len(), 10);
    assert!(Preset::PLANNED.is_empty());
    for p in Preset::ALL {
        assert_eq!(Preset::from_name(p.name()), Some(p));
        assert_eq!(p.to_string(), p.name());
    }
    let names: Vec<&str> = Preset::ALL.iter().map(|p| p.name()).collect();
    assert_eq!(
        names,
        [
            "dnn",
            "resnet",
            "gcn",
            "cnn",
            "conv-resnet",
            "cheb",
            "graphconv",
            "unet",
            "mobilenet",
            "siamese"
        ]
    );
    let graph: Vec<Preset> = Preset::ALL.into_iter().filter(Preset::is_graph).collect();
    assert_eq!(graph, [Preset::Gcn, Preset::Cheb, Preset::GraphConv]);
    let image: Vec<Preset> = Preset::ALL
        .into_iter()
        .filter(Preset::needs_images)
        .collect();
    assert_eq!(
        image,
        [
            Preset::Cnn,
            Preset::ConvResnet,
            Preset::Unet,
            Preset::Mobilenet
        ]
    );
    let pair: Vec<Preset> = Preset::ALL
        .into_iter()
        .filter(Preset::needs_pairs)
        .collect();
    assert_eq!(pair, [Preset::Siamese]);
}

#[test]
fn image_defaults() {
    let c = parse(&images("preset = \"cnn\"\nchannels = [4, 8]")).unwrap();
    assert_eq!(
        c.data,
        DataConfig::Images {
            n: 32,
            channels: 1,
            height: 8,
            width: 8,
            m: 3
        }
    );
    assert_eq!(c.graph, None);
    let m = &c.model;
    assert_eq!(m.preset(), Some(Preset::Cnn));
    assert_eq!(DEFAULT_KERNEL, 3);
    let cnn = ModelSpec::Cnn {
        channels: vec![4, 8],
        kernel: 3,
    };
    assert_eq!(m.spec(), Some(&cnn));
    assert_eq!(m.activation, Activation::leaky_relu());
    assert_eq!(m.init, InitScheme::Torch);
    assert_eq!(c.data.kind(), "images");
    assert_eq!(c.data.n(), Some(32));
    assert_eq!(c.data.m(), Some(3));
    assert_eq!(c.data.input_dim(), Some(64));
    assert_eq!(c.data.image_shape(), Some((1, 8, 8)));
    assert_eq!(c.data.dims(), None);
    assert_eq!(c.output_dim(), Some(3));

    let c = parse(&images(
        "preset = \"conv-resnet\"\nchannels = [4]\ndepth = 2",
    ))
    .unwrap();
    let conv_resnet = ModelSpec::ConvResnet {
        width: 4,
        depth: 2,
        kernel: 3,
    };
    assert_eq!(c.model.spec(), Some(&conv_resnet));
    let c = parse(&images(
        "preset = \"mobilenet\"\nchannels = [8, 16]\nkernel = 5",
    ))
    .unwrap();
    let mobilenet = ModelSpec::Mobilenet {
        channels: vec![8, 16],
        kernel: 5,
    };
    assert_eq!(c.model.spec(), Some(&mobilenet));
    let c = parse(&images("preset = \"unet\"\nchannels = [4, 8]\nkernel = 1")).unwrap();
    let unet = ModelSpec::Unet {
        channels: vec![4, 8],
        kernel: 1,
    };
    assert_eq!(c.model.spec(), Some(&unet));
    // unet's targets are m×H×W images.
    assert_eq!(c.output_dim(), Some(3 * 8 * 8));
}

#[test]
fn graph_and_pair_defaults() {
    let cheb = |hidden: Vec<usize>, order| Some(ModelSpec::Cheb { hidden, order });
    let c = parse(&with_model("preset = \"cheb\"\nhidden = [16]")).unwrap();
    assert_eq!(DEFAULT_ORDER, 3);
    assert_eq!(c.model.spec().cloned(), cheb(vec![16], 3));
    assert_eq!(c.graph, Some(GraphConfig::Knn { k: DEFAULT_K }));
    let c = parse(&with_model("preset = \"cheb\"\nhidden = [16]\norder = 1")).unwrap();
    assert_eq!(c.model.spec().cloned(), cheb(vec![16], 1));
    let c = parse(&with_model("preset = \"graphconv\"\nhidden = [16, 16]")).unwrap();
    assert_eq!(c.graph, Some(GraphConfig::Knn { k: DEFAULT_K }));
    let graphconv = ModelSpec::GraphConv {
        hidden: vec![16, 16],
    };
    assert_eq!(c.model.spec(), Some(&graphconv));
    let siamese = |hidden: Vec<usize>, combine| Some(ModelSpec::Siamese { hidden, combine });

    let c = parse(&pairs("preset = \"siamese\"\nhidden = [16, 16]")).unwrap();
    assert_eq!(c.data, DataConfig::Pairs { n: 40, d: 6, m: 2 });
    let abs_diff = crate::layers::PairCombine::AbsDiff;
    assert_eq!(c.model.spec().cloned(), siamese(vec![16, 16], abs_diff));
    assert_eq!(c.graph, None);
    assert_eq!(
        (c.data.kind(), c.data.input_dim(), c.output_dim()),
        ("pairs", Some(12), Some(2))
    );
    let c = parse(&pairs(
        "preset = \"siamese\"\nhidden = [16]\ncombine = \"concat\"",
    ))
    .unwrap();
    let concat = crate::layers::PairCombine::Concat;
    assert_eq!(c.model.spec().cloned(), siamese(vec![16], concat));
    let c = parse(&pairs(
        "preset = \"siamese\"\nhidden = [16]\ncombine = \"abs-diff\"",
    ))
    .unwrap();
    assert_eq!(c.model.spec().cloned(), siamese(vec![16], abs_diff));
}

#[test]
fn image_preset_needs_image_data() {
    for preset in ["cnn", "unet", "mobilenet"] {
        let (field, message) = fail(&with_model(&format!(
            "preset = \"{preset}\"\nchannels = [4]"
        )));
        assert_eq!(field, "data.kind", "{preset}");
        assert!(
            message.contains(&format!(
                "preset {preset} takes images: set data.kind = \"images\""
            )),
            "{message}"
        );
        assert!(message.contains("data.kind is \"ball\""), "{message}");
    }
    let (field, _) = fail(&with_model(
        "preset = \"conv-resnet\"\nchannels = [4]\ndepth = 1",
    ));
    assert_eq!(field, "data.kind");
    let npy = "[data]\nkind = \"npy\"\nx = \"x.npy\"\ny = \"y.npy\"\n[model]\npreset = \"cnn\"\nchannels = [4]\n";
    let (field, _) = fail(npy);
    assert_eq!(field, "data.kind");
    // And image data need an image preset.
    let (field, message) = fail(&images("preset = \"dnn\"\nhidden = [8]"));
    assert_eq!(field, "data.kind");
    assert!(
        message.contains("only used by the image presets (cnn, conv-resnet, unet, mobilenet)"),
        "{message}"
    );
    let (field, _) = fail(&images("preset = \"siamese\"\nhidden = [8]"));
    assert_eq!(field, "data.kind");
}

#[test]
fn siamese_needs_pair_data() {
    let (field, message) = fail(&with_model("preset = \"siamese\"\nhidden = [8]"));
    assert_eq!(field, "data.kind");
    assert!(
        message.contains("preset siamese takes input pairs: set data.kind = \"pairs\""),
        "{message}"
    );
    let (field, message) = fail(&pairs("preset = \"dnn\"\nhidden = [8]"));
    assert_eq!(field, "data.kind");
    assert!(
        message.contains("data.kind = \"pairs\" is only used by preset siamese"),
        "{message}"
    );
    let (field, _) = fail(&pairs("preset = \"cnn\"\nchannels = [8]"));
    assert_eq!(field, "data.kind");
}

#[test]
fn kernel_must_be_odd() {
    for k in [0, 2, 4] {
        let (field, message) = fail(&images(&format!(
            "preset = \"cnn\"\nchannels = [4]\nkernel = {k}"
        )));
        assert_eq!(field, "model.kernel", "kernel = {k}");
        assert!(
            message.contains(&format!("`model.kernel` = {k} must be odd")),
            "{message}"
        );
        assert!(message.contains("line 11"), "{message}");
    }
}

#[test]
fn unet_sizes_divisible() {
    // Three levels halve the image twice: H and W must be multiples of 4.
    let unet = "preset = \"unet\"\nchannels = [4, 8, 16]";
    let (field, message) = fail(&images_sized(6, 8, unet));
    assert_eq!(field, "data.height");
    assert!(
        message.contains("`data.height` = 6 must be divisible by 2^(levels − 1) = 4"),
        "{message}"
    );
    assert!(message.contains("3 levels"), "{message}");
    let (field, _) = fail(&images_sized(8, 6, unet));
    assert_eq!(field, "data.width");
    let (field, _) = fail(&images_sized(2, 2, unet));
    assert_eq!(field, "data.height");
    assert!(parse(&images_sized(8, 12, unet)).is_ok());
    // One level never halves.
    assert!(parse(&images_sized(5, 7, "preset = \"unet\"\nchannels = [4]")).is_ok());
    // A depth that cannot be written as a power of two is refused, not overflowed.
    let many = format!("preset = \"unet\"\nchannels = {:?}", vec![1; 70]);
    let (field, _) = fail(&images_sized(8, 8, &many));
    assert_eq!(field, "data.height");
}

#[test]
fn new_keys_unused_by_preset() {
    let (field, message) = fail(&with_model("preset = \"dnn\"\nhidden = [8]\norder = 3"));
    assert_eq!(field, "model.order");
    assert!(
        message.contains("`model.order` is only used by preset cheb; remove it"),
        "{message}"
    );
    let (field, message) = fail(&images(
        "preset = \"cnn\"\nchannels = [4]\ncombine = \"concat\"",
    ));
    assert_eq!(field, "model.combine");
    assert!(
        message.contains("`model.combine` is only used by preset siamese; remove it"),
        "{message}"
    );
    let (field, message) = fail(&with_model("preset = \"dnn\"\nhidden = [8]\nkernel = 3"));
    assert_eq!(field, "model.kernel");
    assert!(
        message.contains("only used by presets cnn, conv-resnet, unet and mobilenet"),
        "{message}"
    );
    let (field, message) = fail(&with_model(
        "preset = \"gcn\"\nhidden = [8]\nchannels = [3]",
    ));
    assert_eq!(field, "model.channels");
    assert!(message.contains("`model.hidden`"), "{message}");
    let (field, message) = fail(&images("preset = \"cnn\"\nchannels = [4]\ndepth = 2"));
    assert_eq!(field, "model.depth");
    assert!(
        message.contains("only used by presets resnet and conv-resnet"),
        "{message}"
    );
    let (field, _) = fail(&images("preset = \"unet\"\nchannels = [4]\nhidden = [4]"));
    assert_eq!(field, "model.hidden");
    let (field, _) = fail(&pairs("preset = \"siamese\"\nhidden = [4]\norder = 2"));
    assert_eq!(field, "model.order");
    let (field, message) = fail(&format!(
        "{}[graph]\nk = 3\n",
        images("preset = \"cnn\"\nchannels = [4]")
    ));
    assert_eq!(field, "graph");
    assert!(message.contains("(gcn, cheb, graphconv)"), "{message}");
}

#[test]
fn new_keys_required_and_checked() {
    let (field, message) = fail(&images(
        "preset = \"conv-resnet\"\nchannels = [4, 8]\ndepth = 2",
    ));
    assert_eq!(field, "model.channels");
    assert!(
        message.contains("has 2 entries; preset conv-resnet takes exactly one"),
        "{message}"
    );
    let (field, _) = fail(&images("preset = \"conv-resnet\"\nchannels = [4]"));
    assert_eq!(field, "model.depth");
    let (field, _) = fail(&images(
        "preset = \"conv-resnet\"\nchannels = [4]\ndepth = 0",
    ));
    assert_eq!(field, "model.depth");
    let (field, message) = fail(&images("preset = \"cnn\""));
    assert_eq!(field, "model.channels");
    assert!(message.contains("required for preset cnn"), "{message}");
    let (field, _) = fail(&images("preset = \"mobilenet\"\nchannels = []"));
    assert_eq!(field, "model.channels");
    let (field, _) = fail(&images("preset = \"unet\"\nchannels = [4, 0]"));
    assert_eq!(field, "model.channels");
    let (field, message) = fail(&with_model("preset = \"cheb\"\nhidden = [8]\norder = 0"));
    assert_eq!(field, "model.order");
    assert!(message.contains("at least 1"), "{message}");
    let (field, _) = fail(&with_model("preset = \"graphconv\""));
    assert_eq!(field, "model.hidden");
    let (field, _) = fail(&pairs("preset = \"siamese\"\nhidden = []"));
    assert_eq!(field, "model.hidden");
    let (field, message) = fail(&pairs(
        "preset = \"siamese\"\nhidden = [4]\ncombine = \"sum\"",
    ));
    assert_eq!(field, "model.combine");
    assert!(
        message.contains("unknown combine `sum`; available: abs-diff"),
        "{message}"
    );
    // The graph presets check k against n like gcn.
    let small = "[data]\nkind = \"ball\"\nn = 5\nd = 4\nm = 2\n[model]\n";
    for preset in ["cheb", "graphconv"] {
        let (field, _) = fail(&format!("{small}preset = \"{preset}\"\nhidden = [4]\n"));
        assert_eq!(field, "graph.k", "{preset}");
    }
}

#[test]
fn new_data_keys_checked() {
    let (field, message) =
        fail(&images("preset = \"cnn\"\nchannels = [4]").replace("m = 3", "m = 3\nd = 4"));
    assert_eq!(field, "data.d");
    assert!(
        message.contains("only used by data.kind = \"ball\" or \"pairs\""),
        "{message}"
    );
    let (field, _) =
        fail(&with_model("preset = \"dnn\"\nhidden = [8]").replace("m = 2", "m = 2\nheight = 4"));
    assert_eq!(field, "data.height");
    let (field, _) =
        fail(&images("preset = \"cnn\"\nchannels = [4]").replace("channels = 1\n", ""));
    assert_eq!(field, "data.channels");
    let (field, _) =
        fail(&images("preset = \"cnn\"\nchannels = [4]").replace("width = 8", "width = 0"));
    assert_eq!(field, "data.width");
    let (field, _) = fail(&pairs("preset = \"siamese\"\nhidden = [4]").replace("d = 6\n", ""));
    assert_eq!(field, "data.d");
    let (field, _) =
        fail(&pairs("preset = \"siamese\"\nhidden = [4]").replace("m = 2", "m = 2\nx = \"x.npy\""));
    assert_eq!(field, "data.x");
    let (field, message) =
        fail(&with_model("preset = \"dnn\"\nhidden = [8]").replace("\"ball\"", "\"image\""));
    assert_eq!(field, "data.kind");
    assert!(
        message.contains("available: ball, npy, images, pairs"),
        "{message}"
    );
}

#[test]
fn to_toml_round_trip_new_presets() {
    let base = Path::new("/base");
    let texts = [
        images("preset = \"cnn\"\nchannels = [4, 8]"),
        images("preset = \"cnn\"\nchannels = [4]\nkernel = 5\nactivation = \"relu\""),
        images("preset = \"conv-resnet\"\nchannels = [4]\ndepth = 2\nkernel = 1"),
        images_sized(
            8,
            12,
            "preset = \"unet\"\nchannels = [4, 8, 16]\ninit = \"kaiming-normal\"",
        ),
        images("preset = \"mobilenet\"\nchannels = [8, 16]\nactivation = \"prelu\""),
        with_model("preset = \"cheb\"\nhidden = [16, 16]"),
        format!(
            "{}[graph]\nk = 3\n",
            with_model("preset = \"cheb\"\nhidden = [4]\norder = 5")
        ),
        format!(
            "{}[graph]\nedges = \"e.csv\"\n",
            with_model("preset = \"graphconv\"\nhidden = [4]")
        ),
        with_model("preset = \"graphconv\"\nhidden = [16, 16]\nactivation = \"sigmoid\""),
        pairs("preset = \"siamese\"\nhidden = [16, 16]"),
        format!(
            "seed = 3\n{}[train]\nlr = 0.05\nepochs = 7\n",
            pairs("preset = \"siamese\"\nhidden = [8]\ncombine = \"concat\"")
        ),
    ];
    for text in texts {
        let c = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let out = c.to_toml();
        let back = Config::from_str(&out, Path::new("resolved.toml"), base)
            .unwrap_or_else(|e| panic!("{e}\n{out}"));
        let back = Config {
            source: c.source.clone(),
            ..back
        };
        assert_eq!(back, c, "{out}");
        let p = c.model.preset().expect("a preset config");
        assert_eq!(out.contains("\n[graph]\n"), p.is_graph(), "{out}");
        assert!(
            out.contains(&format!("kind = \"{}\"", c.data.kind())),
            "{out}"
        );
    }
}
