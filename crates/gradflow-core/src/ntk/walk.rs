//! The one walker behind the structured NTK routes: it reads a network through
//! [`Layer::structure`] into a tree of [`Node`]s that both the sample-wise matrix-free products
//! ([`super::structured`]) and the graph Gram route ([`super::graph_gram`]) traverse.
//!
//! The sample-wise nodes are affine maps (the kernel route's dense layers), element-wise
//! activations (applied as one multiplication by their Jacobian's diagonal), opaque leaves (their
//! own vjp/jvp) and the serial and residual composites; the graph route extends them with
//! propagations and affine maps over propagated features. [`Walk::check`] says whether a tree
//! suits a route: the sample-wise route refuses graph nodes, the graph route opaque leaves.
//! Anything the walker cannot read — a composite whose wiring it does not know, a layer that
//! mixes samples without saying how — is an error, and callers fall back to a generic route.

use crate::batch::Batch;
use crate::graph::SparseMatrix;
use crate::layers::{GraphBasis, GraphStructure, Layer, Structure, Tape};
use std::sync::Arc;

/// A leaf of the walked network: the layer, its index into per-leaf storage, and its θ slice.
#[derive(Clone, Copy)]
pub(crate) struct Leaf<'a> {
    pub layer: &'a dyn Layer,
    pub id: usize,
    pub offset: usize,
    pub np: usize,
}

impl Leaf<'_> {
    /// The leaf's slice of the network's θ.
    pub fn theta<'t>(&self, theta: &'t [f64]) -> &'t [f64] {
        &theta[self.offset..self.offset + self.np]
    }
}

/// One node of the walked network. Offsets of weights and biases are absolute (in the network's θ).
pub(crate) enum Node<'a> {
    /// y = W x (+ b) sample by sample; W is out × inp, row-major at `weight`.
    Affine {
        leaf: Leaf<'a>,
        inp: usize,
        out: usize,
        weight: usize,
        bias: Option<usize>,
    },
    /// y = σ(x) entry by entry.
    Elementwise(Leaf<'a>),
    /// A sample-wise leaf known only through its own forward / vjp / jvp.
    Opaque(Leaf<'a>),
    Serial(Vec<Node<'a>>),
    Residual(Box<Node<'a>>),
    /// Graph route: y = X Pᵀ.
    Propagate(Arc<SparseMatrix>),
    /// Graph route: y = Σ_k W_k Z_k (+ b 1ᵀ), Z_k the basis terms of the input; W_k is out × inp
    /// at `weights[k]`.
    GraphAffine {
        leaf: Leaf<'a>,
        inp: usize,
        out: usize,
        basis: GraphBasis,
        weights: Vec<usize>,
        bias: Option<usize>,
    },
}

/// The route a walked tree is meant for ([`Walk::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Networks that keep samples apart: no graph nodes.
    SampleWise,
    /// Graph networks: every leaf affine or element-wise (no opaque leaves).
    Graph,
}

/// A walked network: the tree and the number of leaves (ids run from 0 to `leaves`).
pub(crate) struct Walk<'a> {
    pub root: Node<'a>,
    pub leaves: usize,
}

impl<'a> Walk<'a> {
    /// Reads `net` through [`Layer::structure`]; errors name the first layer that cannot be read.
    pub fn new(net: &'a dyn Layer) -> Result<Self, String> {
        let mut leaves = 0;
        let root = build(net, 0, &mut leaves)?;
        Ok(Self { root, leaves })
    }
    /// Reads `net` and checks the tree suits `route`.
    pub fn for_route(net: &'a dyn Layer, route: Route) -> Result<Self, String> {
        let walk = Self::new(net)?;
        walk.check(route)?;
        Ok(walk)
    }
    /// Ok when every node of the tree can take `route`.
    pub fn check(&self, route: Route) -> Result<(), String> {
        let mut bad = None;
        self.root.visit(&mut |node| {
            let why = match (route, node) {
                (Route::SampleWise, Node::Propagate(_) | Node::GraphAffine { .. }) => {
                    Some("a graph layer mixes samples".to_string())
                }
                (Route::Graph, Node::Opaque(leaf)) => Some(format!(
                    "`{}` is neither affine nor element-wise",
                    leaf.layer.describe()
                )),
                _ => None,
            };
            if bad.is_none() {
                bad = why;
            }
        });
        bad.map_or(Ok(()), Err)
    }
}

impl<'a> Node<'a> {
    pub fn has_params(&self) -> bool {
        match self {
            Node::Affine { .. } | Node::GraphAffine { .. } => true,
            Node::Elementwise(leaf) | Node::Opaque(leaf) => leaf.np > 0,
            Node::Serial(c) => c.iter().any(Node::has_params),
            Node::Residual(inner) => inner.has_params(),
            Node::Propagate(_) => false,
        }
    }
    /// Calls `f` with this node and every node below it, in forward order (parents first).
    pub fn visit(&self, f: &mut dyn FnMut(&Node<'a>)) {
        f(self);
        match self {
            Node::Serial(c) => c.iter().for_each(|c| c.visit(f)),
            Node::Residual(inner) => inner.visit(f),
            _ => {}
        }
    }
    /// Features per sample entering the node (None for propagations and composites without
    /// leaves).
    pub fn in_dim(&self) -> Option<usize> {
        match self {
            Node::Propagate(_) => None,
            Node::Affine { inp, .. } | Node::GraphAffine { inp, .. } => Some(*inp),
            Node::Elementwise(leaf) | Node::Opaque(leaf) => Some(leaf.layer.in_dim()),
            Node::Serial(c) => c.iter().find_map(Node::in_dim),
            Node::Residual(inner) => inner.in_dim(),
        }
    }
}

fn build<'a>(layer: &'a dyn Layer, offset: usize, next: &mut usize) -> Result<Node<'a>, String> {
    let np = layer.num_params();
    let (inp, out) = (layer.in_dim(), layer.out_dim());
    let mut leaf = || {
        let id = *next;
        *next += 1;
        Leaf {
            layer,
            id,
            offset,
            np,
        }
    };
    let what = || layer.describe();
    match layer.structure() {
        Structure::Affine(a) => {
            if (a.inp, a.out) != (inp, out) || !a.fits(np) {
                return Err(format!("`{}`: inconsistent affine structure", what()));
            }
            Ok(Node::Affine {
                leaf: leaf(),
                inp,
                out,
                weight: offset + a.weight,
                bias: a.bias.map(|b| offset + b),
            })
        }
        Structure::Elementwise(_) if inp == out => Ok(Node::Elementwise(leaf())),
        Structure::Elementwise(_) => Err(format!("`{}`: element-wise but resizes", what())),
        Structure::Serial(children) => {
            let mut nodes = Vec::with_capacity(children.len());
            let mut off = offset;
            for c in children {
                nodes.push(build(c, off, next)?);
                off += c.num_params();
            }
            if off - offset != np {
                return Err(format!("`{}`: children's parameters do not add up", what()));
            }
            Ok(Node::Serial(nodes))
        }
        Structure::Residual(branch) => {
            if branch.num_params() != np || (branch.in_dim(), branch.out_dim()) != (inp, out) {
                return Err(format!("`{}`: the branch differs from the block", what()));
            }
            Ok(Node::Residual(Box::new(build(branch, offset, next)?)))
        }
        Structure::Graph(GraphStructure::Propagate(p)) if np == 0 && inp == out => {
            Ok(Node::Propagate(p))
        }
        Structure::Graph(GraphStructure::Propagate(_)) => {
            Err(format!("`{}`: not a plain propagation", what()))
        }
        Structure::Graph(GraphStructure::Affine {
            basis,
            weights,
            bias,
        }) => {
            let w = inp * out;
            let fits = |o: usize, len: usize| o.checked_add(len).is_some_and(|e| e <= np);
            let count = weights.len() * w + bias.map_or(0, |_| out);
            if weights.len() != basis.len()
                || basis.is_empty()
                || count != np
                || !weights.iter().all(|&o| fits(o, w))
                || !bias.is_none_or(|o| fits(o, out))
            {
                return Err(format!("`{}`: inconsistent graph structure", what()));
            }
            Ok(Node::GraphAffine {
                leaf: leaf(),
                inp,
                out,
                basis,
                weights: weights.iter().map(|o| offset + o).collect(),
                bias: bias.map(|o| offset + o),
            })
        }
        Structure::Opaque if layer.mixes_samples() => Err(format!(
            "`{}` mixes samples without a graph structure",
            what()
        )),
        Structure::Opaque if !layer.children().is_empty() => Err(format!(
            "composite `{}` is not read by the NTK walker",
            what()
        )),
        Structure::Opaque => Ok(Node::Opaque(leaf())),
    }
}

/// The diagonal of an element-wise leaf's input Jacobian at its input x: the tangent of the
/// all-ones batch (θ̇ = 0). None when it is not finite (the caller then takes a generic route).
/// `theta` is the leaf's slice.
pub(crate) fn elementwise_diagonal(
    layer: &dyn Layer,
    theta: &[f64],
    x: &Batch,
    tape: &Tape,
) -> Option<Batch> {
    let (f, n) = (x.features(), x.n());
    let ones = Batch::from_vec(f, n, vec![1.0; f * n]);
    let d = layer.jvp(theta, x, tape, &ones, &vec![0.0; theta.len()]);
    (d.features() == f && d.n() == n && d.all_finite()).then_some(d)
}
