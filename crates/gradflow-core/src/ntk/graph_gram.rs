//! The structured NTK route for graph networks (gcn, cheb, graphconv): H = J Jᵀ (nm × nm) from
//! one sparse reverse pass, without the Jacobian.
//!
//! **Maths.** Output column c = (i, a). Going backwards, column c's cotangent at a layer is a
//! (width × n) matrix Ȳ_c supported on a node set S_i ([`super::sparse_cot`]): {i} at the
//! output, and a propagation y = X Pᵀ (y_k = Σ_j P_kj x_j) carries it to x̄_j = Σ_k P_kj ȳ_k, i.e.
//! to S_i ∪ N_P(S_i). Every parametrised layer of these networks is *affine in stacked
//! propagated features*: y = Σ_k W_k Z_k + b 1ᵀ with Z_k = X P_kᵀ (dense: Z_0 = X; GraphConv:
//! Z = [X Aᵀ, X]; ChebConv: Z_k = X T_k(L̃)ᵀ). With x̃_j = [Z_0[:, j]; …; Z_{K−1}[:, j]; 1] the
//! per-column parameter cotangent is, up to the order of parameters (which the Gram ignores),
//! θ̄_c = Σ_{j∈S_i} ȳ_{c,j} x̃_jᵀ = Ȳ_c X̃ᵀ, so the layer adds ⟨θ̄_c, θ̄_c'⟩ to H[c, c'] by one of
//! two routes:
//! - **Hadamard** (every support a single node, as at the output layer): H += (ȲᵀȲ) ⊙ (X̃_gᵀX̃_g)
//!   with X̃_g the features of each column's node — cost (nm)²·(out + in′), as for the affine
//!   layers' structured `vjp_gram`.
//! - **tiles** (wider supports): for a block of output rows o, T[(o, f), c] = Σ_{j∈S_i} ȳ_{c,j}[o]
//!   x̃_j[f] (one small GEMM per column), then H += Tᵀ T on the lower triangle. Memory: one tile
//!   (at most [`TILE_BYTES`]; [`tile_bytes_for`]), never the layer's nm × p Jacobian block; cost (nm)²·p_l/2 plus
//!   nm·|S|·p_l to form the tiles (the Jacobian route pays (nm)²·p for J Jᵀ and nm full vjps).
//!
//! (The parameter-Gram kernels and the Chebyshev adjoint live in [`super::graph_terms`].)
//!
//! The input cotangent of an affine layer is Σ_k P_kᵀ-adjoint(W_kᵀ ȳ) (Chebyshev: the adjoint
//! recurrence, on nested supports); element-wise leaves (activation layers) scale each stored
//! column by their Jacobian diagonal at its node, and
//! a leaf with a few parameters (PReLU's slope) adds PᵀP with P[k, c] = Σ ⟨ȳ, ∂y/∂θ_k⟩ over
//! column c's nodes (∂y/∂θ_k from one jvp on the whole batch).
//!
//! **Memory.** Propagations and element-wise layers act on nodes feature by feature, so they are
//! not applied at once: a cotangent travels as a [`Lazy`] (the last stored batch plus these
//! row-separable operations), and the affine layer below materialises one tile's block of output
//! rows at a time (accumulating W_kᵀ Ȳ block by block when its input cotangent is needed). The
//! widest cotangents — two or more hops from every node, at the first layers — therefore never
//! exist whole; what is stored is the narrower batch after the last affine layer. Peak memory is
//! H plus that batch plus one row block and one tile ([`graph_gram_bytes`] estimates it from the
//! supports); the Jacobian route holds H plus nm × p.
//!
//! The network is read by the NTK walker ([`super::walk`], from [`Layer::structure`]): this
//! route is the sample-wise one extended by propagations and affine maps over propagated
//! features, and takes no opaque leaves. Each affine layer's forward pass is recomputed from its
//! decomposition and compared with the layer's own; anything the walker cannot read makes
//! [`graph_gram`] return an error, and [`super::gram`] then takes the Jacobian route.

use super::gram::{mirror_lower, zeros_parallel};
use super::graph_terms::{
    affine_term, agree, basis_terms, chebyshev_adjoint, leaf_gram, HADAMARD_ROWS,
};
pub use super::graph_terms::{tile_bytes_for, TILE_BYTES};
use super::sparse_cot::{Lazy, RowOp, SparseCot, Supports};
use super::walk::{elementwise_diagonal, Leaf, Node, Route, Walk};
use crate::batch::{par, Batch};
use crate::graph::propagate_columns;
#[cfg(doc)]
use crate::layers::Layer;
use crate::layers::{GraphBasis, Tape};
use crate::model::Model;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};
use std::borrow::Cow;
use std::sync::Arc;

/// An affine node of the walked network as a sum over stacked basis terms, y = Σ_k W_k Z_k (+ b):
/// a graph layer's own decomposition, or for a sample-wise affine map the one term Z_0 = X.
struct Stacked<'n> {
    leaf: Leaf<'n>,
    inp: usize,
    out: usize,
    basis: Cow<'n, GraphBasis>,
    weights: Cow<'n, [usize]>,
    bias: Option<usize>,
}

impl<'n> Stacked<'n> {
    fn of(node: &'n Node<'_>) -> Option<Self> {
        match node {
            Node::Affine {
                leaf,
                inp,
                out,
                weight,
                bias,
            } => Some(Self {
                leaf: *leaf,
                inp: *inp,
                out: *out,
                basis: Cow::Owned(GraphBasis::Terms(vec![None])),
                weights: Cow::Owned(vec![*weight]),
                bias: *bias,
            }),
            Node::GraphAffine {
                leaf,
                inp,
                out,
                basis,
                weights,
                bias,
            } => Some(Self {
                leaf: *leaf,
                inp: *inp,
                out: *out,
                basis: Cow::Borrowed(basis),
                weights: Cow::Borrowed(weights),
                bias: *bias,
            }),
            _ => None,
        }
    }
}

/// What the forward pass leaves for the reverse pass, by node id.
#[derive(Default)]
struct Prepared {
    /// Affine nodes: X̃ (in′ × n), the stacked basis terms and a row of ones for the bias.
    features: Vec<Option<Mat<f64>>>,
    /// Leaves: the Jacobian's diagonal, and ∂y/∂θ_k per parameter.
    diagonal: Vec<Option<Arc<Batch>>>,
    dparams: Vec<Vec<Batch>>,
}

fn weight<'t>(theta: &'t [f64], at: usize, out: usize, inp: usize) -> MatRef<'t, f64> {
    MatRef::from_row_major_slice(&theta[at..at + out * inp], out, inp)
}

fn forward(
    node: &Node<'_>,
    theta: &[f64],
    x: &Batch,
    prep: &mut Prepared,
) -> Result<Batch, String> {
    match node {
        Node::Propagate(p) => {
            if p.n() != x.n() {
                return Err(format!(
                    "a graph of {} nodes on a batch of {}",
                    p.n(),
                    x.n()
                ));
            }
            Ok(propagate_columns(p, x, false))
        }
        Node::Affine { .. } | Node::GraphAffine { .. } => {
            let Stacked {
                leaf,
                inp,
                out,
                basis,
                weights,
                bias,
            } = Stacked::of(node).expect("an affine node");
            let z = basis_terms(&basis, x)?;
            let (y, _) = leaf.layer.forward(leaf.theta(theta), x);
            let rows = z.len() * inp + bias.is_some() as usize;
            let mut f = Mat::<f64>::zeros(rows, x.n());
            let mut mine = Batch::zeros(out, x.n());
            for (k, zk) in z.iter().enumerate() {
                f.as_mut().subrows_mut(k * inp, inp).copy_from(zk.mat());
                let w = weight(theta, weights[k], out, inp);
                matmul(mine.mat_mut(), Accum::Add, w, zk.mat(), 1.0, par());
            }
            if let Some(b) = bias {
                f.as_mut().row_mut(rows - 1).fill(1.0);
                mine.add_to_columns(&theta[b..b + out]);
            }
            if !agree(&mine, &y) {
                return Err(format!(
                    "`{}`: its structure does not reproduce its forward pass",
                    leaf.layer.describe()
                ));
            }
            prep.features[leaf.id] = Some(f);
            Ok(y)
        }
        Node::Elementwise(leaf) => {
            let (layer, np) = (leaf.layer, leaf.np);
            let th = leaf.theta(theta);
            let (y, tape): (Batch, Tape) = layer.forward(th, x);
            let d = elementwise_diagonal(layer, th, x, &tape).ok_or_else(|| {
                format!(
                    "`{}`: its Jacobian's diagonal is not finite",
                    layer.describe()
                )
            })?;
            let zero_in = Batch::zeros(x.features(), x.n());
            prep.dparams[leaf.id] = (0..np)
                .map(|k| {
                    let mut e = vec![0.0; np];
                    e[k] = 1.0;
                    layer.jvp(th, x, &tape, &zero_in, &e)
                })
                .collect();
            prep.diagonal[leaf.id] = Some(Arc::new(d));
            Ok(y)
        }
        Node::Opaque(_) => unreachable!("opaque leaves are refused by Walk::for_route(Graph)"),
        Node::Serial(children) => {
            let mut cur = x.clone();
            for c in children {
                cur = forward(c, theta, &cur, prep)?;
            }
            Ok(cur)
        }
        Node::Residual(inner) => {
            let mut y = forward(inner, theta, x, prep)?;
            if y.features() != x.features() {
                return Err("residual: branch changes the width".into());
            }
            y.add_assign(x);
            Ok(y)
        }
    }
}

/// The reverse pass: adds every parametrised node's term to h and returns the input cotangent
/// when asked for.
fn reverse(
    node: &Node<'_>,
    theta: &[f64],
    cot: Lazy,
    need_input: bool,
    prep: &Prepared,
    tile_bytes: usize,
    h: &mut Mat<f64>,
) -> Result<Option<Lazy>, String> {
    match node {
        Node::Propagate(p) => {
            if !need_input {
                return Ok(None);
            }
            let target = Arc::new(cot.supports().expand(p));
            let mut cot = cot;
            cot.push(RowOp::Spread(p.clone(), target));
            Ok(Some(cot))
        }
        Node::Affine { .. } | Node::GraphAffine { .. } => {
            let Stacked {
                leaf,
                inp,
                out,
                basis,
                weights,
                ..
            } = Stacked::of(node).expect("an affine node");
            let f = prep.features[leaf.id].as_ref().ok_or("missing features")?;
            let ws: Vec<MatRef<'_, f64>> = if need_input {
                weights
                    .iter()
                    .map(|&at| weight(theta, at, out, inp))
                    .collect()
            } else {
                Vec::new()
            };
            let zb = affine_term(f, &cot, &ws, tile_bytes, h)?;
            drop(cot);
            if !need_input {
                return Ok(None);
            }
            let x_bar = match basis.as_ref() {
                GraphBasis::Terms(ts) => {
                    let mut target = zb[0].sup.as_ref().clone();
                    let mut parts = Vec::with_capacity(ts.len());
                    for (t, z) in ts.iter().zip(&zb) {
                        if let Some(p) = t {
                            target = target.union(&z.sup.expand(p));
                        }
                        parts.push((1.0, t.as_deref(), z));
                    }
                    SparseCot::combine(&Arc::new(target), &parts)?
                }
                GraphBasis::Chebyshev { l_tilde, order } => chebyshev_adjoint(l_tilde, *order, zb)?,
            };
            Ok(Some(Lazy::new(x_bar)))
        }
        Node::Elementwise(leaf) => {
            let d = prep.diagonal[leaf.id].as_ref().ok_or("missing diagonal")?;
            if leaf.np == 0 {
                if !need_input {
                    return Ok(None);
                }
                let mut cot = cot;
                cot.push(RowOp::Scale(d.clone()));
                return Ok(Some(cot));
            }
            let mut full = cot.materialize()?;
            leaf_gram(&prep.dparams[leaf.id], &full, h);
            if !need_input {
                return Ok(None);
            }
            full.scale_by_nodes(d, 0);
            Ok(Some(Lazy::new(full)))
        }
        Node::Serial(children) => {
            let mut cur = Some(cot);
            for k in (0..children.len()).rev() {
                let need = need_input || children[..k].iter().any(Node::has_params);
                let Some(c) = cur.take() else {
                    return Err("internal: a cotangent went missing".into());
                };
                cur = reverse(&children[k], theta, c, need, prep, tile_bytes, h)?;
                if !need {
                    return Ok(None);
                }
            }
            Ok(cur)
        }
        Node::Residual(inner) => {
            if !need_input {
                reverse(inner, theta, cot, false, prep, tile_bytes, h)?;
                return Ok(None);
            }
            let r = reverse(inner, theta, cot.clone(), true, prep, tile_bytes, h)?
                .ok_or("internal: residual branch gave no cotangent")?
                .materialize()?;
            let cot = cot.materialize()?;
            let target = Arc::new(r.sup.union(&cot.sup));
            let sum = SparseCot::combine(&target, &[(1.0, None, &r), (1.0, None, &cot)])?;
            Ok(Some(Lazy::new(sum)))
        }
        Node::Opaque(_) => unreachable!("opaque leaves are refused by Walk::for_route(Graph)"),
    }
}

/// True when [`graph_gram`] can read the network (it may still fail on a given θ, x: a
/// mismatched graph, a non-finite activation derivative).
pub fn supported(model: &Model) -> bool {
    Walk::for_route(model.net.as_ref(), Route::Graph).is_ok()
}

/// H = J Jᵀ (nm × nm, index i·m + a) by the structured graph route (see the module
/// documentation). Errors name what the walker cannot handle.
pub fn graph_gram(model: &Model, theta: &[f64], x: &Batch) -> Result<Mat<f64>, String> {
    graph_gram_tiled(model, theta, x, tile_bytes_for(x.n() * model.out_dim()))
}

/// [`graph_gram`] with tiles of at most `tile_bytes` (at least one output row per tile), for
/// tests that cut layers into many tiles.
pub fn graph_gram_tiled(
    model: &Model,
    theta: &[f64],
    x: &Batch,
    tile_bytes: usize,
) -> Result<Mat<f64>, String> {
    let Walk {
        root,
        leaves: count,
    } = Walk::for_route(model.net.as_ref(), Route::Graph)?;
    if theta.len() != model.p() || x.features() != model.in_dim() {
        return Err("θ or x does not fit the model".into());
    }
    let mut prep = Prepared {
        features: (0..count).map(|_| None).collect(),
        diagonal: (0..count).map(|_| None).collect(),
        dparams: (0..count).map(|_| Vec::new()).collect(),
    };
    let y = forward(&root, theta, x, &mut prep)?;
    if !agree(&y, &model.outputs(theta, x)) {
        return Err("the walked forward pass does not reproduce the model's outputs".into());
    }
    let (n, m) = (x.n(), model.out_dim());
    let mut h = zeros_parallel(n * m);
    let cot = Lazy::new(SparseCot::outputs(n, m));
    reverse(&root, theta, cot, false, &prep, tile_bytes, &mut h)?;
    mirror_lower(&mut h);
    Ok(h)
}

/// Bytes held by the structured graph route on n samples (H, the forward features and the
/// largest set of live cotangents, row blocks and tiles), from the supports alone; None when the
/// network cannot take this route.
pub fn graph_gram_bytes(model: &Model, n: usize) -> Option<u64> {
    let root = Walk::for_route(model.net.as_ref(), Route::Graph).ok()?.root;
    let m = model.out_dim();
    let mut est = Estimate {
        n,
        m,
        peak: 0,
        stored: 0,
    };
    let outputs = (n * m * m * 8) as u64;
    est.walk(&root, Arc::new(Supports::singletons(n)), m, false, outputs)?;
    let big_n = (n * m) as u64;
    Some(big_n * big_n * 8 + est.stored + est.peak)
}

/// The symbolic reverse pass behind [`graph_gram_bytes`]: it follows the supports and the bytes
/// of each lazy cotangent's stored base (see [`Lazy`]).
struct Estimate {
    n: usize,
    m: usize,
    /// Largest transient working set (bytes).
    peak: u64,
    /// Forward quantities kept for the reverse pass (bytes).
    stored: u64,
}

impl Estimate {
    fn cot(&self, sup: &Supports, width: usize) -> u64 {
        (sup.total() * self.m * width * 8) as u64
    }
    /// Returns the input supports and the bytes of the input cotangent's stored base.
    fn walk(
        &mut self,
        node: &Node<'_>,
        sup: Arc<Supports>,
        width: usize,
        need: bool,
        base: u64,
    ) -> Option<(Arc<Supports>, u64)> {
        let big_n = (self.n * self.m) as u64;
        match node {
            Node::Propagate(p) => {
                if p.n() != self.n || sup.n() != self.n {
                    return None;
                }
                Some((Arc::new(sup.expand(p)), base))
            }
            Node::Affine { .. } | Node::GraphAffine { .. } => {
                let Stacked {
                    inp, basis, bias, ..
                } = Stacked::of(node).expect("an affine node");
                let feats = (basis.len() * inp + bias.is_some() as usize) as u64;
                self.stored += feats * self.n as u64 * 8;
                let k = basis.len() as u64;
                let zb = if need { k * self.cot(&sup, inp) } else { 0 };
                let work = if sup.all_single() {
                    self.cot(&sup, width) + (feats + 2 * HADAMARD_ROWS as u64) * big_n * 8
                } else {
                    let block = (tile_bytes_for(big_n as usize) as u64
                        / (feats * big_n * 8).max(1))
                    .clamp(1, width as u64);
                    2 * self.cot(&sup, 1) * block + block * feats * big_n * 8
                };
                self.peak = self.peak.max(base + work + zb);
                let mut next = sup.as_ref().clone();
                match basis.as_ref() {
                    GraphBasis::Terms(ts) => {
                        for p in ts.iter().flatten() {
                            if p.n() != self.n {
                                return None;
                            }
                            next = next.union(&sup.expand(p));
                        }
                    }
                    GraphBasis::Chebyshev { l_tilde, order } => {
                        if l_tilde.n() != self.n {
                            return None;
                        }
                        for _ in 1..*order {
                            next = next.expand(l_tilde);
                        }
                    }
                }
                let wide = self.cot(&next, inp);
                if need {
                    self.peak = self.peak.max(zb + 2 * wide);
                }
                Some((Arc::new(next), wide))
            }
            Node::Elementwise(leaf) | Node::Opaque(leaf) => {
                let np = leaf.np;
                self.stored += ((np + 2) * leaf.layer.in_dim() * self.n) as u64 * 8;
                if np == 0 {
                    return Some((sup, base));
                }
                let full = self.cot(&sup, width);
                self.peak = self.peak.max(base + 2 * full + np as u64 * big_n * 8);
                Some((sup, full))
            }
            Node::Serial(children) => {
                let mut cur = (sup, width, base);
                for k in (0..children.len()).rev() {
                    let need = need || children[..k].iter().any(Node::has_params);
                    let c = &children[k];
                    let w_in = c.in_dim().unwrap_or(cur.1);
                    let (s, b) = self.walk(c, cur.0, cur.1, need, cur.2)?;
                    if !need {
                        return Some((s, b));
                    }
                    cur = (s, w_in, b);
                }
                Some((cur.0, cur.2))
            }
            Node::Residual(inner) => {
                let (s, b) = self.walk(inner, sup.clone(), width, need, base)?;
                let union = Arc::new(s.union(&sup));
                let full = self.cot(&union, width);
                self.peak = self.peak.max(b + base + 3 * full);
                Some((union, full))
            }
        }
    }
}
