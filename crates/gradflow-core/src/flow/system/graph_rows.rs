//! Rows ∇_θ z_j of pinned pre-activations in networks that mix samples over a graph (gcn), by
//! reverse passes that carry only the nodes a cotangent has reached.
//!
//! A seed at entry (node i, unit u) of an activation layer is a cotangent supported on {i}.
//! Going backwards, an affine map keeps the support (it acts node by node), an element-wise σ
//! keeps it, and a propagation y = X Pᵀ widens it to the nodes j with P_kj ≠ 0 for some k in it.
//! So the row of a pinned entry costs (support size) × (layer widths²) per affine layer instead
//! of a whole-batch reverse pass per entry: on a sparse graph a handful of nodes instead of n.
//! The arithmetic is that of the layers' own vjps restricted to the support (the other columns
//! are exact zeros), with σ′ read from the installed pattern ([`ActivationLayer::eval`]).
//!
//! The network is read through [`Structure`]: serial compositions, residual blocks, affine
//! maps, activations (PReLU's slope included) and parameter-free propagations. Anything else
//! (graph convolutions with several bases, opaque layers) keeps the whole-batch passes.

use super::Controlled;
use crate::batch::Batch;
use crate::graph::SparseMatrix;
use crate::layers::{ActivationLayer, Affine, GraphStructure, Layer, Structure};
use std::sync::Arc;

/// The network as the sparse row pass reads it (θ offsets global).
pub(super) enum RowNode<'a> {
    Affine {
        layer: &'a dyn Layer,
        map: Affine,
        offset: usize,
    },
    /// Controlled activation layer `index` (the flow's layer order).
    Activation {
        layer: &'a ActivationLayer,
        offset: usize,
        index: usize,
    },
    Propagate {
        layer: &'a dyn Layer,
        matrix: Arc<SparseMatrix>,
    },
    Residual(Box<RowNode<'a>>),
    Serial(Vec<RowNode<'a>>),
}

/// What the forward pass keeps: affine inputs and activation inputs (whole batch).
enum Trace {
    Input(Batch),
    None,
    Residual(Box<Trace>),
    Serial(Vec<Trace>),
}

/// A cotangent on a set of nodes: sorted node list, `width` values per node.
#[derive(Clone, Debug, Default)]
struct SparseCot {
    nodes: Vec<usize>,
    values: Vec<f64>,
    width: usize,
}

impl SparseCot {
    fn empty(width: usize) -> Self {
        Self {
            width,
            ..Default::default()
        }
    }
    fn column(&self, t: usize) -> &[f64] {
        &self.values[t * self.width..(t + 1) * self.width]
    }
    /// self + other, supports merged (both of the same width).
    fn add(self, other: &SparseCot) -> SparseCot {
        if other.nodes.is_empty() {
            return self;
        }
        if self.nodes.is_empty() {
            return other.clone();
        }
        let w = self.width;
        let mut nodes: Vec<usize> = self.nodes.iter().chain(&other.nodes).copied().collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut values = vec![0.0; nodes.len() * w];
        for src in [&self, other] {
            for (t, &j) in src.nodes.iter().enumerate() {
                let at = nodes.binary_search(&j).expect("merged support");
                for (v, s) in values[at * w..(at + 1) * w].iter_mut().zip(src.column(t)) {
                    *v += s;
                }
            }
        }
        SparseCot {
            nodes,
            values,
            width: w,
        }
    }
}

/// Reads the network; None when some layer is outside what the sparse pass handles, or the
/// activation layers are not met in the flow's order.
pub(super) fn build<'a>(net: &'a dyn Layer, controlled: &[Controlled<'a>]) -> Option<RowNode<'a>> {
    let (mut offset, mut index) = (0, 0);
    let node = read(net, &mut offset, &mut index, controlled)?;
    (index == controlled.len()).then_some(node)
}

fn read<'a>(
    layer: &'a dyn Layer,
    offset: &mut usize,
    index: &mut usize,
    controlled: &[Controlled<'a>],
) -> Option<RowNode<'a>> {
    let start = *offset;
    let node = match layer.structure() {
        Structure::Affine(map) if map.fits(layer.num_params()) => RowNode::Affine {
            layer,
            map,
            offset: start,
        },
        Structure::Elementwise(a) => {
            let same = controlled
                .get(*index)
                .is_some_and(|c| std::ptr::eq(c.layer, a));
            if !same {
                return None;
            }
            *index += 1;
            RowNode::Activation {
                layer: a,
                offset: start,
                index: *index - 1,
            }
        }
        Structure::Graph(GraphStructure::Propagate(matrix)) if layer.num_params() == 0 => {
            RowNode::Propagate { layer, matrix }
        }
        Structure::Residual(inner) => {
            let node = read(inner, offset, index, controlled)?;
            *offset = start + layer.num_params();
            return Some(RowNode::Residual(Box::new(node)));
        }
        Structure::Serial(children) => {
            let mut nodes = Vec::with_capacity(children.len());
            for c in children {
                nodes.push(read(c, offset, index, controlled)?);
            }
            *offset = start + layer.num_params();
            return Some(RowNode::Serial(nodes));
        }
        _ => return None,
    };
    *offset = start + layer.num_params();
    Some(node)
}

impl RowNode<'_> {
    fn params(&self) -> usize {
        match self {
            RowNode::Affine { map, .. } => map.num_params(),
            RowNode::Activation { layer, .. } => layer.num_params(),
            _ => 0,
        }
    }

    /// The forward pass on the whole batch (the layers' own, under the installed pattern).
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Trace) {
        match self {
            RowNode::Affine { layer, offset, .. } => {
                let y = layer.forward(&theta[*offset..*offset + self.params()], x).0;
                (y, Trace::Input(x.clone()))
            }
            RowNode::Activation { layer, offset, .. } => {
                let y = layer.forward(&theta[*offset..*offset + self.params()], x).0;
                (y, Trace::Input(x.clone()))
            }
            RowNode::Propagate { layer, .. } => (layer.forward(&[], x).0, Trace::None),
            RowNode::Residual(inner) => {
                let (mut y, tr) = inner.forward(theta, x);
                y.add_assign(x);
                (y, Trace::Residual(Box::new(tr)))
            }
            RowNode::Serial(nodes) => {
                let mut h = x.clone();
                let mut traces = Vec::with_capacity(nodes.len());
                for c in nodes {
                    let (y, tr) = c.forward(theta, &h);
                    h = y;
                    traces.push(tr);
                }
                (h, Trace::Serial(traces))
            }
        }
    }

    /// The reverse pass of cotangent `cot` (at this node's output), adding the parameter
    /// cotangent into `row`; the seed (controlled layer, node, unit) is added at that
    /// activation layer's input. Returns the input cotangent.
    fn backward(
        &self,
        theta: &[f64],
        trace: &Trace,
        cot: SparseCot,
        seed: (usize, usize, usize),
        row: &mut [f64],
    ) -> SparseCot {
        match (self, trace) {
            (RowNode::Affine { map, offset, .. }, Trace::Input(x)) => {
                let (inp, out) = (map.inp, map.out);
                let w = &theta[offset + map.weight..offset + map.weight + inp * out];
                let mut below = SparseCot {
                    nodes: cot.nodes.clone(),
                    values: vec![0.0; cot.nodes.len() * inp],
                    width: inp,
                };
                for (t, &j) in cot.nodes.iter().enumerate() {
                    let (y_bar, xj) = (cot.column(t), x.col(j));
                    let x_bar = &mut below.values[t * inp..(t + 1) * inp];
                    for (o, &g) in y_bar.iter().enumerate() {
                        if g == 0.0 {
                            continue;
                        }
                        let at = offset + map.weight + o * inp;
                        for (r, &xv) in row[at..at + inp].iter_mut().zip(xj) {
                            *r += g * xv;
                        }
                        for (xb, &wv) in x_bar.iter_mut().zip(&w[o * inp..(o + 1) * inp]) {
                            *xb += g * wv;
                        }
                        if let Some(b) = map.bias {
                            row[offset + b + o] += g;
                        }
                    }
                }
                below
            }
            (
                RowNode::Activation {
                    layer,
                    offset,
                    index,
                },
                Trace::Input(z),
            ) => {
                let a = if layer.num_params() > 0 {
                    theta[*offset]
                } else {
                    0.0
                };
                let mut cot = cot;
                let mut slope_bar = 0.0;
                {
                    let guard = layer.control.lock();
                    let n = z.n();
                    let SparseCot {
                        nodes,
                        values,
                        width,
                    } = &mut cot;
                    for (t, &j) in nodes.iter().enumerate() {
                        let zj = z.col(j);
                        let col = &mut values[t * *width..(t + 1) * *width];
                        for (u, g) in col.iter_mut().enumerate() {
                            let mode = layer.piece_of(&guard, j, n, u);
                            let (_, d, da) = layer.eval(mode, zj[u], a);
                            slope_bar += *g * da;
                            *g *= d;
                        }
                    }
                }
                if layer.num_params() > 0 {
                    row[*offset] += slope_bar;
                }
                let (li, node, unit) = seed;
                if li == *index {
                    let mut s = SparseCot {
                        nodes: vec![node],
                        values: vec![0.0; cot.width],
                        width: cot.width,
                    };
                    s.values[unit] = 1.0;
                    cot = cot.add(&s);
                }
                cot
            }
            (RowNode::Propagate { matrix, .. }, Trace::None) => {
                // x̄_j = Σ_k P_kj ȳ_k over the support's rows k.
                let width = cot.width;
                let mut nodes: Vec<usize> = cot
                    .nodes
                    .iter()
                    .flat_map(|&k| matrix.row(k).map(|(j, _)| j))
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                let mut values = vec![0.0; nodes.len() * width];
                for (t, &k) in cot.nodes.iter().enumerate() {
                    let y_bar = cot.column(t);
                    for (j, v) in matrix.row(k) {
                        let at = nodes.binary_search(&j).expect("in the support");
                        for (xb, &g) in values[at * width..(at + 1) * width].iter_mut().zip(y_bar) {
                            *xb += v * g;
                        }
                    }
                }
                SparseCot {
                    nodes,
                    values,
                    width,
                }
            }
            (RowNode::Residual(inner), Trace::Residual(tr)) => {
                let through = inner.backward(theta, tr, cot.clone(), seed, row);
                through.add(&cot)
            }
            (RowNode::Serial(nodes), Trace::Serial(traces)) => {
                let mut cot = cot;
                for (c, tr) in nodes.iter().zip(traces).rev() {
                    cot = c.backward(theta, tr, cot, seed, row);
                }
                cot
            }
            _ => unreachable!("internal error: a trace of another node"),
        }
    }
}

/// The rows of `seeds` (controlled layer, node, unit), one per seed, into `rows` (each zeroed
/// by the caller, length p): one whole-batch forward pass, then a support-restricted reverse
/// pass per seed. `out_width` is the network's output width.
pub(super) fn sparse_rows<'r>(
    net: &RowNode<'_>,
    theta: &[f64],
    x: &Batch,
    out_width: usize,
    seeds: &[(usize, usize, usize)],
    rows: impl Iterator<Item = &'r mut [f64]>,
) {
    let (_, trace) = net.forward(theta, x);
    for (&seed, row) in seeds.iter().zip(rows) {
        net.backward(theta, &trace, SparseCot::empty(out_width), seed, row);
    }
}
