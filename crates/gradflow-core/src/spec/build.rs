//! From a layer list to layers: shape inference, the checks of each entry against the shape it
//! receives (errors name the entry's path and the fix), construction of the same layer objects
//! the presets use, and PyTorch-style parameter names.

use super::LayerSpec;
use crate::activation::Activation;
use crate::config::{parse_activation, DEFAULT_ORDER};
use crate::error::{Error, Result};
use crate::graph::{scaled_laplacian, Graph, SparseMatrix};
use crate::layers::image::window_output;
use crate::layers::{
    ActivationLayer, AvgPool2d, ChebConv, Conv2d, Dense, DepthwiseConv2d, FanOutConcat, GraphConv,
    GroupedConv2d, Identity, ImageShape, Layer, MaxPool2d, PairCombine, Propagate, Residual,
    Serial, SharedPair, Upsample2d,
};
use crate::model::Model;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// What flows between layers: a vector of d features or a C×H×W image (flattened row-major).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Vector(usize),
    Image(ImageShape),
}

impl Shape {
    /// Features per sample.
    pub fn len(&self) -> usize {
        match self {
            Self::Vector(d) => *d,
            Self::Image(s) => s.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vector(d) => write!(f, "a vector of {d} features"),
            Self::Image(s) => write!(f, "a {s} image (C×H×W)"),
        }
    }
}

/// Where a layer list was written, for errors: the file (or a label) and the path of the list
/// (`model.layers` in TOML, `layers` in JSON).
pub struct SpecSite<'a> {
    pub file: &'a Path,
    pub root: &'a str,
}

/// The samples' graph and the operators graph layers read from it (each built on first use):
/// Â for `propagate`, A for `graphconv`, L̃ for `cheb` — those of the gcn, graphconv and cheb
/// presets.
pub struct GraphOperators<'a> {
    graph: &'a Graph,
    a_hat: OnceLock<Arc<SparseMatrix>>,
    adjacency: OnceLock<Arc<SparseMatrix>>,
    l_tilde: OnceLock<Arc<SparseMatrix>>,
}

impl<'a> GraphOperators<'a> {
    pub fn new(graph: &'a Graph) -> Self {
        Self {
            graph,
            a_hat: OnceLock::new(),
            adjacency: OnceLock::new(),
            l_tilde: OnceLock::new(),
        }
    }
    fn a_hat(&self) -> Arc<SparseMatrix> {
        self.a_hat
            .get_or_init(|| Arc::new(self.graph.normalized_adjacency()))
            .clone()
    }
    fn adjacency(&self) -> Arc<SparseMatrix> {
        self.adjacency
            .get_or_init(|| Arc::new(self.graph.adjacency()))
            .clone()
    }
    fn l_tilde(&self) -> Arc<SparseMatrix> {
        self.l_tilde
            .get_or_init(|| Arc::new(scaled_laplacian(self.graph, None)))
            .clone()
    }
}

/// A built layer list: the network (a [`Serial`] of the entries), the name of every parameter
/// tensor in θ order, and the output shape.
#[derive(Debug)]
pub struct BuiltLayers {
    pub net: Box<dyn Layer>,
    pub names: Vec<String>,
    pub output: Shape,
}

impl BuiltLayers {
    /// The model (no preset) with the list's parameter names.
    pub fn into_model(self, activation: Activation) -> Model {
        Model::new(self.net, None, activation).with_param_names(self.names)
    }
}

/// Builds `layers` on inputs of shape `input`; `activation` is the default σ of
/// `{kind = "activation"}` entries, `graph` the samples' graph for graph layers.
pub fn build_layers(
    layers: &[LayerSpec],
    input: Shape,
    activation: &Activation,
    graph: Option<&GraphOperators<'_>>,
    site: &SpecSite<'_>,
) -> Result<BuiltLayers> {
    let mut w = Walker {
        site,
        activation,
        graph,
        has_graph: graph.is_some(),
        build: true,
        names: Vec::new(),
    };
    not_empty(layers, site)?;
    let (output, built) = w.list(layers, input, site.root, "layers", true)?;
    let net = serial(built, input);
    let specs = net.param_specs();
    assert_eq!(
        specs.len(),
        w.names.len(),
        "internal error: parameter names out of step with the layers"
    );
    let mut seen = std::collections::BTreeSet::new();
    for name in &w.names {
        if !seen.insert(name.as_str()) {
            return Err(Error::config(
                site.file,
                site.root,
                format!("two parameter tensors are both named `{name}`: give the entries distinct `name`s (a `name` is the prefix of its layer's parameter names, like a PyTorch module path)"),
            ));
        }
    }
    Ok(BuiltLayers {
        net,
        names: w.names,
        output,
    })
}

/// The checks of [`build_layers`] without building anything (no graph needed): the output
/// shape, or the first error. `has_graph`: whether the samples will have a graph.
pub fn check_layers(
    layers: &[LayerSpec],
    input: Shape,
    activation: &Activation,
    has_graph: bool,
    site: &SpecSite<'_>,
) -> Result<Shape> {
    not_empty(layers, site)?;
    let mut w = Walker {
        site,
        activation,
        graph: None,
        has_graph,
        build: false,
        names: Vec::new(),
    };
    Ok(w.list(layers, input, site.root, "layers", true)?.0)
}

fn not_empty(layers: &[LayerSpec], site: &SpecSite<'_>) -> Result<()> {
    if layers.is_empty() {
        return Err(Error::config(
            site.file,
            site.root,
            "the layer list is empty: list at least one layer, e.g. { kind = \"dense\", out = 10 }",
        ));
    }
    Ok(())
}

/// The layers of a list as one [`Serial`] (the presets' form); a list that makes no layer
/// (only `flatten`) is the identity.
fn serial(layers: Vec<Box<dyn Layer>>, input: Shape) -> Box<dyn Layer> {
    if layers.is_empty() {
        return Box::new(Identity::new(input.len()));
    }
    Box::new(Serial::new(layers))
}

struct Walker<'a> {
    site: &'a SpecSite<'a>,
    activation: &'a Activation,
    graph: Option<&'a GraphOperators<'a>>,
    has_graph: bool,
    /// False: only check shapes (nothing is constructed).
    build: bool,
    names: Vec<String>,
}

/// A layer, when the walker builds and the entry makes one (`flatten` does not).
type Built = Option<Box<dyn Layer>>;

impl Walker<'_> {
    fn err(&self, field: &str, message: String) -> Error {
        Error::config(self.site.file, field, message)
    }

    /// The entries of one list, in order; `path` is the list's field path, `prefix` the name
    /// prefix of its entries' parameters.
    fn list(
        &mut self,
        specs: &[LayerSpec],
        input: Shape,
        path: &str,
        prefix: &str,
        top: bool,
    ) -> Result<(Shape, Vec<Box<dyn Layer>>)> {
        let mut shape = input;
        let mut layers = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let at = format!("{path}[{i}]");
            let name = match spec.name() {
                Some("") => {
                    return Err(self.err(
                        &format!("{at}.name"),
                        "`name` is empty; give the prefix of this layer's parameter names (e.g. name = \"features.0\") or remove it".into(),
                    ))
                }
                Some(n) => n.to_string(),
                None => format!("{prefix}.{i}"),
            };
            let (out, layer) = self.entry(spec, shape, &at, &name, top && i == 0)?;
            layers.extend(layer);
            shape = out;
        }
        Ok((shape, layers))
    }

    /// A nested list as one layer: a [`Serial`] of its entries.
    fn nested(
        &mut self,
        specs: &[LayerSpec],
        input: Shape,
        path: &str,
        prefix: &str,
    ) -> Result<(Shape, Built)> {
        let (out, layers) = self.list(specs, input, path, prefix, false)?;
        Ok((out, self.build.then(|| serial(layers, input))))
    }

    /// Records the parameter names of a leaf built at `prefix`.
    fn leaf(&mut self, prefix: &str, make: impl FnOnce() -> Box<dyn Layer>) -> Built {
        if !self.build {
            return None;
        }
        let layer = make();
        for s in layer.param_specs() {
            self.names.push(format!("{prefix}.{}", s.name));
        }
        Some(layer)
    }

    fn vector(&self, shape: Shape, at: &str, kind: &str) -> Result<usize> {
        match shape {
            Shape::Vector(d) => Ok(d),
            Shape::Image(s) => Err(self.err(
                at,
                format!("`{kind}` works on vectors, but its input is a {s} image: add {{ kind = \"flatten\" }} before it"),
            )),
        }
    }

    fn image(&self, shape: Shape, at: &str, kind: &str) -> Result<ImageShape> {
        match shape {
            Shape::Image(s) => Ok(s),
            Shape::Vector(d) => Err(self.err(
                at,
                format!("`{kind}` works on images (C, H, W), but its input is a vector of {d} features: use image data (data.kind = \"images\") and place it before any flatten"),
            )),
        }
    }

    fn positive(&self, v: usize, at: &str, key: &str, what: &str) -> Result<usize> {
        if v == 0 {
            return Err(self.err(
                &format!("{at}.{key}"),
                format!("`{key}` must be at least 1 ({what})"),
            ));
        }
        Ok(v)
    }

    fn graph_needed(&self, at: &str, kind: &str) -> Result<()> {
        if self.has_graph {
            Ok(())
        } else {
            Err(self.err(
                at,
                format!("`{kind}` works on the samples' graph: add a [graph] section (k = 10 for a k-nearest-neighbour graph, or edges = \"edges.csv\")"),
            ))
        }
    }

    /// Output side of a k-window with `stride` and `padding` over an image, or an error at
    /// `{at}.kernel` naming the side that is too small.
    fn window(
        &self,
        s: ImageShape,
        k: usize,
        stride: usize,
        padding: usize,
        at: &str,
    ) -> Result<(usize, usize)> {
        match (window_output(s.h, k, stride, padding), window_output(s.w, k, stride, padding)) {
            (Some(h), Some(w)) => Ok((h, w)),
            _ => Err(self.err(
                &format!("{at}.kernel"),
                format!("a {k}×{k} window does not fit the {}×{} input (padded by {padding} on each side): use a smaller kernel, more padding, or place it before the image shrinks", s.h, s.w),
            )),
        }
    }

    fn entry(
        &mut self,
        spec: &LayerSpec,
        input: Shape,
        at: &str,
        name: &str,
        first: bool,
    ) -> Result<(Shape, Built)> {
        match spec {
            LayerSpec::Dense { out, bias, .. } => {
                let d = self.vector(input, at, "dense")?;
                let out = self.positive(*out, at, "out", "the output features")?;
                let bias = *bias;
                let l = self.leaf(name, || {
                    Box::new(if bias { Dense::new(d, out) } else { Dense::without_bias(d, out) })
                });
                Ok((Shape::Vector(out), l))
            }
            LayerSpec::Conv2d { out, kernel, stride, padding, groups, bias, .. } => {
                let s = self.image(input, at, "conv2d")?;
                let out = self.positive(*out, at, "out", "the output channels")?;
                let k = self.positive(*kernel, at, "kernel", "the kernel size k of a k×k kernel")?;
                let stride = self.positive(*stride, at, "stride", "the step of the kernel")?;
                let g = self.positive(*groups, at, "groups", "1 for an ordinary convolution")?;
                if s.c % g != 0 || out % g != 0 {
                    return Err(self.err(
                        &format!("{at}.groups"),
                        format!("groups = {g} must divide both the input channels ({}) and `out` ({out}), as in nn.Conv2d", s.c),
                    ));
                }
                let (h, w) = self.window(s, k, stride, *padding, at)?;
                let (p, bias) = (*padding, *bias);
                let l = self.leaf(name, || -> Box<dyn Layer> {
                    if g == 1 {
                        let c = Conv2d::square(s.c, out, k, stride, p, s.h, s.w);
                        Box::new(if bias { c } else { c.without_bias() })
                    } else if g == s.c && g == out && bias {
                        Box::new(DepthwiseConv2d::new(s.c, k, k, stride, p, s.h, s.w))
                    } else {
                        Box::new(GroupedConv2d::new(s.c, out, k, stride, p, g, s.h, s.w, bias))
                    }
                });
                Ok((Shape::Image(ImageShape::new(out, h, w)), l))
            }
            LayerSpec::Activation { activation, .. } => {
                let a = match activation {
                    Some(a) => parse_activation(a, self.site.file, &format!("{at}.activation"))?,
                    None => self.activation.clone(),
                };
                let dim = input.len();
                Ok((input, self.leaf(name, || Box::new(ActivationLayer::new(a, dim)))))
            }
            LayerSpec::AvgPool2d { kernel, stride, .. } | LayerSpec::MaxPool2d { kernel, stride, .. } => {
                let kind = spec.kind();
                let s = self.image(input, at, kind)?;
                let k = self.positive(*kernel, at, "kernel", "the window size k of a k×k window")?;
                let stride = self.positive(stride.unwrap_or(k), at, "stride", "the step of the window; default: kernel")?;
                let (h, w) = self.window(s, k, stride, 0, at)?;
                let avg = matches!(spec, LayerSpec::AvgPool2d { .. });
                let l = self.leaf(name, || -> Box<dyn Layer> {
                    if avg {
                        Box::new(AvgPool2d::new(s.c, k, stride, s.h, s.w))
                    } else {
                        Box::new(MaxPool2d::new(s.c, k, stride, s.h, s.w))
                    }
                });
                Ok((Shape::Image(ImageShape::new(s.c, h, w)), l))
            }
            LayerSpec::Flatten { .. } => match input {
                Shape::Image(s) => Ok((Shape::Vector(s.len()), None)),
                Shape::Vector(d) => Err(self.err(
                    at,
                    format!("`flatten` turns images into vectors, but its input is already a vector of {d} features: remove it"),
                )),
            },
            LayerSpec::Upsample { factor, .. } => {
                let s = self.image(input, at, "upsample")?;
                let f = self.positive(*factor, at, "factor", "the integer scale factor")?;
                let l = self.leaf(name, || Box::new(Upsample2d::new(s.c, f, s.h, s.w)));
                Ok((Shape::Image(ImageShape::new(s.c, s.h * f, s.w * f)), l))
            }
            LayerSpec::Residual { layers, .. } => {
                if layers.is_empty() {
                    return Err(self.err(
                        &format!("{at}.layers"),
                        "`layers` is empty: list the layers of f in x + f(x)".into(),
                    ));
                }
                let (out, inner) = self.nested(layers, input, &format!("{at}.layers"), &format!("{name}.layers"))?;
                if out != input {
                    return Err(self.err(
                        &format!("{at}.layers"),
                        format!("x + f(x) needs f to keep the shape, but the residual's layers map {input} to {out}: make the last layer give {}", input.len()),
                    ));
                }
                Ok((input, inner.map(|f| Box::new(Residual::new(f)) as Box<dyn Layer>)))
            }
            LayerSpec::Concat { branches, .. } => self.concat(branches, input, at, name),
            LayerSpec::Propagate { .. } => {
                let d = self.vector(input, at, "propagate")?;
                self.graph_needed(at, "propagate")?;
                let g = self.graph;
                let l = self.leaf(name, || Box::new(Propagate::new(operators(g).a_hat(), d)));
                Ok((input, l))
            }
            LayerSpec::GraphConv { out, .. } => {
                let d = self.vector(input, at, "graphconv")?;
                let out = self.positive(*out, at, "out", "the output features")?;
                self.graph_needed(at, "graphconv")?;
                let g = self.graph;
                let l = self.leaf(name, || Box::new(GraphConv::new(d, out, operators(g).adjacency())));
                Ok((Shape::Vector(out), l))
            }
            LayerSpec::Cheb { out, order, .. } => {
                let d = self.vector(input, at, "cheb")?;
                let out = self.positive(*out, at, "out", "the output features")?;
                let order = self.positive(order.unwrap_or(DEFAULT_ORDER), at, "order", "the Chebyshev order K: T_0 … T_{K−1}; default 3")?;
                self.graph_needed(at, "cheb")?;
                let g = self.graph;
                let l = self.leaf(name, || Box::new(ChebConv::new(d, out, order, operators(g).l_tilde())));
                Ok((Shape::Vector(out), l))
            }
            LayerSpec::SharedPair { tower, combine, .. } => {
                if !first {
                    return Err(self.err(
                        at,
                        "`shared-pair` splits the input pair [a; b], so it must be the first layer: move it to the top of `layers`".into(),
                    ));
                }
                let d2 = self.vector(input, at, "shared-pair")?;
                if tower.is_empty() {
                    return Err(self.err(
                        &format!("{at}.tower"),
                        "`tower` is empty: list the layers applied to each half of the pair".into(),
                    ));
                }
                if d2 % 2 != 0 {
                    return Err(self.err(
                        at,
                        format!("`shared-pair` takes pairs x = [a; b], but the input has {d2} features, an odd number: use data.kind = \"pairs\""),
                    ));
                }
                let combine = match combine.as_deref() {
                    None | Some("abs-diff") => PairCombine::AbsDiff,
                    Some("concat") => PairCombine::Concat,
                    Some(other) => {
                        return Err(self.err(
                            &format!("{at}.combine"),
                            format!("unknown combine `{other}`; available: abs-diff (|f(a) − f(b)|), concat ([f(a); f(b)])"),
                        ))
                    }
                };
                let (out, t) = self.nested(tower, Shape::Vector(d2 / 2), &format!("{at}.tower"), &format!("{name}.tower"))?;
                let e = self.vector(out, &format!("{at}.tower"), "shared-pair's tower output")?;
                let y = match combine {
                    PairCombine::AbsDiff => e,
                    PairCombine::Concat => 2 * e,
                };
                Ok((Shape::Vector(y), t.map(|t| Box::new(SharedPair::new(t, combine)) as Box<dyn Layer>)))
            }
        }
    }

    fn concat(
        &mut self,
        branches: &[Vec<LayerSpec>],
        input: Shape,
        at: &str,
        name: &str,
    ) -> Result<(Shape, Built)> {
        if branches.is_empty() {
            return Err(self.err(
                &format!("{at}.branches"),
                "`branches` is empty: list at least one branch (a list of layers; [] is the identity)".into(),
            ));
        }
        let mut outs = Vec::new();
        let mut layers: Vec<Box<dyn Layer>> = Vec::new();
        for (b, branch) in branches.iter().enumerate() {
            let path = format!("{at}.branches[{b}]");
            let (out, l) = if branch.is_empty() {
                let id = self
                    .build
                    .then(|| Box::new(Identity::new(input.len())) as Box<dyn Layer>);
                (input, id)
            } else {
                self.nested(branch, input, &path, &format!("{name}.branches.{b}"))?
            };
            let fits = match (outs.first(), out) {
                (None, _) => true,
                (Some(Shape::Vector(_)), Shape::Vector(_)) => true,
                (Some(Shape::Image(a)), Shape::Image(o)) => (a.h, a.w) == (o.h, o.w),
                _ => false,
            };
            if !fits {
                return Err(self.err(
                    &path,
                    format!("concatenation needs vectors in every branch, or images of one height and width (joined along channels); branch 0 gives {} but branch {b} gives {out}", outs[0]),
                ));
            }
            outs.push(out);
            layers.extend(l);
        }
        let shape = match outs[0] {
            Shape::Vector(_) => Shape::Vector(outs.iter().map(Shape::len).sum()),
            Shape::Image(s) => {
                let c = outs.iter().map(|o| match o {
                    Shape::Image(s) => s.c,
                    Shape::Vector(_) => 0,
                });
                Shape::Image(ImageShape::new(c.sum(), s.h, s.w))
            }
        };
        let built = self
            .build
            .then(|| Box::new(FanOutConcat::new(layers)) as Box<dyn Layer>);
        Ok((shape, built))
    }
}

/// The graph operators while building (the walker checked that a graph exists).
fn operators<'a>(g: Option<&'a GraphOperators<'a>>) -> &'a GraphOperators<'a> {
    g.expect("internal error: a graph layer was built without a graph")
}
