//! The presets: [`ModelSpec`], one variant per preset carrying exactly the `[model]` keys that
//! preset takes, and [`Preset`], its fieldless kind (name, data it takes, engine support).
//!
//! A new preset is a variant of [`ModelSpec`] with its kind in [`Preset`]; the compiler then
//! asks for it wherever specs are read: [`ModelSpec::preset`] and [`ModelSpec::keys`] here,
//! `resolve_spec` in [`super::model`] (reading its keys from the file), and the model builders
//! that match on the spec.

use super::model::combine_name;
use crate::layers::PairCombine;
use std::fmt;

/// A preset architecture with the `[model]` keys it takes, validated (defaults filled in). A
/// key the preset does not take has no field: `[model]` keys are checked against
/// [`ModelSpec::keys`] of the preset when the config is read.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    /// Fully connected, d → hidden[0] → … → m.
    Dnn { hidden: Vec<usize> },
    /// `depth` ≥ 1 residual blocks of width d.
    Resnet { depth: usize },
    /// Graph convolutions Â H W on the samples' graph, d → hidden[0] → … → m.
    Gcn { hidden: Vec<usize> },
    /// Same-padded k×k convolution blocks of `channels` widths (k = `kernel`, odd).
    Cnn { channels: Vec<usize>, kernel: usize },
    /// `depth` ≥ 1 convolutional residual blocks of `width` channels (written
    /// `channels = [width]`), k×k kernels.
    ConvResnet {
        width: usize,
        depth: usize,
        kernel: usize,
    },
    /// Chebyshev graph convolutions of order K = `order` ≥ 1, hidden widths `hidden`.
    Cheb { hidden: Vec<usize>, order: usize },
    /// GraphConv layers (W₁h + W₂ Σ_neighbours h) of hidden widths `hidden`.
    GraphConv { hidden: Vec<usize> },
    /// A U-Net with `channels[i]` channels at encoder level i, k×k kernels.
    Unet { channels: Vec<usize>, kernel: usize },
    /// MobileNet blocks (depthwise k×k, then pointwise) of `channels` widths.
    Mobilenet { channels: Vec<usize>, kernel: usize },
    /// One tower of `hidden` widths shared by both halves of x = [a; b], combined by `combine`.
    Siamese {
        hidden: Vec<usize>,
        combine: PairCombine,
    },
}

impl ModelSpec {
    /// The preset this spec is of.
    pub fn preset(&self) -> Preset {
        match self {
            Self::Dnn { .. } => Preset::Dnn,
            Self::Resnet { .. } => Preset::Resnet,
            Self::Gcn { .. } => Preset::Gcn,
            Self::Cnn { .. } => Preset::Cnn,
            Self::ConvResnet { .. } => Preset::ConvResnet,
            Self::Cheb { .. } => Preset::Cheb,
            Self::GraphConv { .. } => Preset::GraphConv,
            Self::Unet { .. } => Preset::Unet,
            Self::Mobilenet { .. } => Preset::Mobilenet,
            Self::Siamese { .. } => Preset::Siamese,
        }
    }

    /// The `[model]` keys of the spec (`preset` aside) with their values as TOML text, in the
    /// order [`super::Config::to_toml`] writes them. Their names are the keys the preset takes.
    pub fn keys(&self) -> Vec<(&'static str, String)> {
        let hidden = |w: &[usize]| ("hidden", format!("{w:?}"));
        let channels = |w: &[usize]| ("channels", format!("{w:?}"));
        let count = |key: &'static str, v: usize| (key, v.to_string());
        match self {
            Self::Dnn { hidden: h } | Self::Gcn { hidden: h } | Self::GraphConv { hidden: h } => {
                vec![hidden(h)]
            }
            Self::Resnet { depth } => vec![count("depth", *depth)],
            Self::Cnn {
                channels: c,
                kernel,
            }
            | Self::Unet {
                channels: c,
                kernel,
            }
            | Self::Mobilenet {
                channels: c,
                kernel,
            } => vec![channels(c), count("kernel", *kernel)],
            Self::ConvResnet {
                width,
                depth,
                kernel,
            } => vec![
                channels(&[*width]),
                count("depth", *depth),
                count("kernel", *kernel),
            ],
            Self::Cheb { hidden: h, order } => vec![hidden(h), count("order", *order)],
            Self::Siamese { hidden: h, combine } => vec![
                hidden(h),
                ("combine", format!("\"{}\"", combine_name(*combine))),
            ],
        }
    }
}

/// The kinds of preset, without their keys (see [`ModelSpec`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Preset {
    Dnn,
    Resnet,
    Gcn,
    Cnn,
    ConvResnet,
    Cheb,
    GraphConv,
    Unet,
    Mobilenet,
    Siamese,
}

impl Preset {
    /// Every available preset, in the order they are listed to users.
    pub const ALL: [Preset; 10] = [
        Preset::Dnn,
        Preset::Resnet,
        Preset::Gcn,
        Preset::Cnn,
        Preset::ConvResnet,
        Preset::Cheb,
        Preset::GraphConv,
        Preset::Unet,
        Preset::Mobilenet,
        Preset::Siamese,
    ];
    /// Presets named in the design that are not implemented yet (none at present).
    pub const PLANNED: [&'static str; 0] = [];

    pub fn name(&self) -> &'static str {
        match self {
            Self::Dnn => "dnn",
            Self::Resnet => "resnet",
            Self::Gcn => "gcn",
            Self::Cnn => "cnn",
            Self::ConvResnet => "conv-resnet",
            Self::Cheb => "cheb",
            Self::GraphConv => "graphconv",
            Self::Unet => "unet",
            Self::Mobilenet => "mobilenet",
            Self::Siamese => "siamese",
        }
    }

    /// True when the preset needs a graph on the samples (a `[graph]` section).
    pub fn is_graph(&self) -> bool {
        matches!(self, Self::Gcn | Self::Cheb | Self::GraphConv)
    }

    /// True for the convolutional presets, which take `data.kind = "images"`.
    pub fn needs_images(&self) -> bool {
        matches!(
            self,
            Self::Cnn | Self::ConvResnet | Self::Unet | Self::Mobilenet
        )
    }

    /// True for the presets the compiled engine ([`crate::engine`]) trains, in f32 or f64; the
    /// others train on the layer path, in f64 only.
    pub fn has_engine(&self) -> bool {
        matches!(self, Self::Dnn | Self::Resnet | Self::Gcn)
    }

    /// The names of the presets with an engine ([`Self::has_engine`]), listed for users.
    pub fn engine_names() -> String {
        let with_engine = Self::ALL.into_iter().filter(Self::has_engine);
        with_engine.map(|p| p.name()).collect::<Vec<_>>().join(", ")
    }

    /// True for the presets on input pairs (`data.kind = "pairs"`).
    pub fn needs_pairs(&self) -> bool {
        matches!(self, Self::Siamese)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    pub(super) fn available() -> String {
        Self::ALL.map(|p| p.name()).join(", ")
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
