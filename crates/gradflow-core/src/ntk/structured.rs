//! Block products H V = J (Jᵀ V) for networks that do not mix samples, organised around the
//! affine (dense) layers (the matrix-free counterpart of the structured Gram route).
//!
//! For an affine layer l with input x_l (d_{l−1} × n) and output cotangents Ū_l = B_lᵀ V (what one
//! reverse pass of V delivers at the layer's output, d_l × n per vector), its Jacobian block
//! contributes J_l J_lᵀ V = B_l (Ū_l K_l) with K_l = x_lᵀ x_l + 1 (n × n; no + 1 without a bias,
//! [`Kernel`]): the weight cotangent Ū_l x̃_lᵀ is never formed, the sample kernel K_l does the
//! work — the same identity as [`affine_vjp_gram`](crate::layers::dense::affine_vjp_gram)'s
//! (ȳ_c·ȳ_c')(x_c·x_c' + 1), applied to vectors instead of summed into H. One product is
//! therefore: a reverse pass of the b vectors (m × n·b cotangents, all GEMMs), one GEMM with K_l
//! per layer and vector (or the low-rank x̃ᵀ(x̃ ·) when d_{l−1} + 1 < n/2), and a forward tangent
//! pass that injects Ū_l K_l at each affine output. Nothing of size nm × p or nm × nm exists, and
//! the per-sample output cotangents G_l (nm × d_l) are not stored either: the reverse pass
//! recomputes G_lᵀV with a few GEMMs, cheaper than streaming a stored G (220 MB at paper scale)
//! twice per product. Parameter-free element-wise leaves are applied as one multiplication by
//! their Jacobian's diagonal.
//!
//! The network is read by the NTK walker ([`super::walk`], from
//! [`Layer::structure`](crate::layers::Layer::structure)): serial and
//! residual composites are walked, affine leaves get the kernel route, and every other leaf uses
//! its own `vjp`/`jvp` per vector (a parametrised one contributes J_leaf J_leafᵀ v exactly that
//! way). The walked forward pass must reproduce the model's outputs, and
//! [`super::ntk_spectrum`] also checks one product against [`NtkOperator`](super::NtkOperator);
//! anything the walker cannot read (composites of unknown wiring, layers that mix samples) makes
//! [`StructuredNtk::new`] return an error, so callers fall back to the generic route.

use super::sample_kernel::Kernel;
use super::walk::{elementwise_diagonal, Node, Route, Walk};
use crate::batch::{par, Batch};
use crate::layers::Tape;
use crate::model::Model;
use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatRef};

/// Columns [j·n, (j+1)·n) of a batch of b·n columns: vector j's block.
fn chunk(b: &Batch, j: usize, n: usize) -> Batch {
    let f = b.features();
    Batch::from_vec(f, n, b.as_slice()[j * n * f..(j + 1) * n * f].to_vec())
}

fn concat(parts: Vec<Batch>) -> Batch {
    if parts.len() == 1 {
        return parts.into_iter().next().unwrap();
    }
    let f = parts[0].features();
    let cols: usize = parts.iter().map(Batch::n).sum();
    let mut data = Vec::with_capacity(f * cols);
    for p in parts {
        data.extend_from_slice(p.as_slice());
    }
    Batch::from_vec(f, cols, data)
}

/// y ⊙= d for every vector block of y (y has b·n columns, d has n).
fn scale_columns(y: &mut Batch, d: &Batch) {
    let block = d.as_slice().len();
    for yb in y.as_mut_slice().chunks_mut(block) {
        yb.iter_mut().zip(d.as_slice()).for_each(|(a, b)| *a *= b);
    }
}

/// What a reverse pass leaves behind: the output cotangents of every affine layer (by leaf id)
/// and the per-vector parameter cotangents of every other parametrised leaf.
struct Reverse {
    affine: Vec<Option<Batch>>,
    grads: Vec<Option<Vec<Vec<f64>>>>,
}

/// H V for a network that does not mix samples, by the affine-layer kernel route (see the
/// module documentation). Built once per (θ, x); `apply_block` is then one product per column.
pub struct StructuredNtk<'a> {
    theta: &'a [f64],
    root: Node<'a>,
    n: usize,
    m: usize,
    inputs: Vec<Batch>,
    tapes: Vec<Tape>,
    kernels: Vec<Option<Kernel>>,
    /// For parameter-free element-wise leaves: their Jacobian's diagonal, so tangents and
    /// cotangents are one multiplication.
    diagonals: Vec<Option<Batch>>,
    /// Single-vector products done so far.
    pub products: usize,
}

/// The output width of an affine node's map (its cotangents' features).
fn affine_out(node: &Node<'_>) -> Option<(usize, usize)> {
    match node {
        Node::Affine { leaf, out, .. } => Some((leaf.id, *out)),
        _ => None,
    }
}

impl<'a> StructuredNtk<'a> {
    /// Walks `model.net`, runs the forward pass on x and checks it reproduces the model's outputs.
    /// Errors name the first layer the walker cannot handle (or the first that mixes samples).
    pub fn new(model: &'a Model, theta: &'a [f64], x: &'a Batch) -> Result<Self, String> {
        let walk = Walk::for_route(model.net.as_ref(), Route::SampleWise)?;
        let count = walk.leaves;
        let mut s = Self {
            theta,
            root: walk.root,
            n: x.n(),
            m: model.out_dim(),
            inputs: Vec::with_capacity(count),
            tapes: Vec::with_capacity(count),
            kernels: Vec::new(),
            diagonals: Vec::new(),
            products: 0,
        };
        let mut inputs: Vec<Option<Batch>> = (0..count).map(|_| None).collect();
        let mut tapes: Vec<Option<Tape>> = (0..count).map(|_| None).collect();
        let y = Self::forward(&s.root, theta, x, &mut inputs, &mut tapes);
        let reference = model.outputs(theta, x);
        let scale = reference
            .as_slice()
            .iter()
            .fold(0.0f64, |a, v| a.max(v.abs()))
            .max(1.0);
        let diff = y
            .as_slice()
            .iter()
            .zip(reference.as_slice())
            .fold(0.0f64, |a, (p, q)| a.max((p - q).abs()));
        // (NaN compares false: a NaN difference fails the check.)
        let close = diff <= 1e-12 * scale;
        if y.features() != reference.features() || !close {
            return Err("the walked forward pass does not reproduce the model's outputs".into());
        }
        s.inputs = inputs.into_iter().map(Option::unwrap).collect();
        s.tapes = tapes.into_iter().map(Option::unwrap).collect();
        let mut kernels: Vec<Option<Kernel>> = (0..count).map(|_| None).collect();
        let mut diagonals: Vec<Option<Batch>> = (0..count).map(|_| None).collect();
        s.root.visit(&mut |node| match node {
            Node::Affine { leaf, bias, .. } => {
                kernels[leaf.id] = Some(Kernel::new(&s.inputs[leaf.id], bias.is_some()));
            }
            Node::Elementwise(leaf) if leaf.np == 0 => {
                let (x, tape) = (&s.inputs[leaf.id], &s.tapes[leaf.id]);
                diagonals[leaf.id] = elementwise_diagonal(leaf.layer, &[], x, tape);
            }
            _ => {}
        });
        s.kernels = kernels;
        s.diagonals = diagonals;
        Ok(s)
    }

    fn forward(
        node: &Node<'a>,
        theta: &[f64],
        x: &Batch,
        inputs: &mut [Option<Batch>],
        tapes: &mut [Option<Tape>],
    ) -> Batch {
        match node {
            Node::Affine {
                leaf,
                inp,
                out,
                weight,
                bias,
            } => {
                let w =
                    MatRef::from_row_major_slice(&theta[*weight..weight + inp * out], *out, *inp);
                let mut y = Batch::zeros(*out, x.n());
                matmul(y.mat_mut(), Accum::Replace, w, x.mat(), 1.0, par());
                if let Some(b) = bias {
                    let b = &theta[*b..b + out];
                    for i in 0..x.n() {
                        for (v, bi) in y.col_mut(i).iter_mut().zip(b) {
                            *v += bi;
                        }
                    }
                }
                inputs[leaf.id] = Some(x.clone());
                tapes[leaf.id] = Some(crate::layers::no_tape());
                y
            }
            Node::Elementwise(leaf) | Node::Opaque(leaf) => {
                let (y, t) = leaf.layer.forward(leaf.theta(theta), x);
                inputs[leaf.id] = Some(x.clone());
                tapes[leaf.id] = Some(t);
                y
            }
            Node::Serial(children) => {
                let mut cur = None::<Batch>;
                for c in children {
                    let inp = cur.as_ref().unwrap_or(x);
                    cur = Some(Self::forward(c, theta, inp, inputs, tapes));
                }
                cur.unwrap_or_else(|| x.clone())
            }
            Node::Residual(inner) => {
                let mut y = Self::forward(inner, theta, x, inputs, tapes);
                y.add_assign(x);
                y
            }
            Node::Propagate(_) | Node::GraphAffine { .. } => {
                unreachable!("graph nodes are refused by Walk::for_route(SampleWise)")
            }
        }
    }

    /// nm, the size of H.
    pub fn dim(&self) -> usize {
        self.n * self.m
    }
    pub fn n(&self) -> usize {
        self.n
    }
    pub fn m(&self) -> usize {
        self.m
    }

    /// Bytes held: layer inputs, kernels (tapes are not counted; for the layers walked they are
    /// empty or the size of an input).
    pub fn bytes(&self) -> u64 {
        let inputs: u64 = self
            .inputs
            .iter()
            .map(|b| (b.as_slice().len() * 8) as u64)
            .sum();
        let kernels: u64 = self.kernels.iter().flatten().map(Kernel::bytes).sum();
        2 * inputs + kernels
    }

    /// Σ d_l over the affine layers: features of the cotangents a reverse pass keeps per column.
    pub fn affine_width(&self) -> usize {
        let mut w = 0;
        self.root
            .visit(&mut |node| w += affine_out(node).map_or(0, |(_, out)| out));
        w
    }

    /// The ids of the affine nodes, in forward order.
    fn affine_ids(&self) -> Vec<usize> {
        let mut ids = Vec::new();
        self.root
            .visit(&mut |node| ids.extend(affine_out(node).map(|(id, _)| id)));
        ids
    }

    /// Bytes of the transient batches of one product with b vectors (reverse cotangents kept for
    /// every affine layer, plus tangents).
    pub fn product_bytes(&self, b: usize) -> u64 {
        let widths: usize = self.inputs.iter().map(Batch::features).sum::<usize>() + self.m;
        (3 * widths * self.n * b * 8) as u64
    }

    fn reverse(
        &self,
        node: &Node<'a>,
        y_bar: Batch,
        need_input: bool,
        b: usize,
        rev: &mut Reverse,
    ) -> Option<Batch> {
        let n = self.n;
        match node {
            Node::Affine {
                leaf,
                inp,
                out,
                weight,
                ..
            } => {
                let x_bar = need_input.then(|| {
                    let w = MatRef::from_row_major_slice(
                        &self.theta[*weight..weight + inp * out],
                        *out,
                        *inp,
                    );
                    let mut xb = Batch::zeros(*inp, y_bar.n());
                    matmul(
                        xb.mat_mut(),
                        Accum::Replace,
                        w.transpose(),
                        y_bar.mat(),
                        1.0,
                        par(),
                    );
                    xb
                });
                rev.affine[leaf.id] = Some(y_bar);
                x_bar
            }
            Node::Elementwise(leaf) | Node::Opaque(leaf) => {
                let (layer, id, np) = (leaf.layer, &leaf.id, &leaf.np);
                if *np == 0 && !need_input {
                    return None;
                }
                if let Some(d) = &self.diagonals[*id] {
                    let mut y = y_bar;
                    scale_columns(&mut y, d);
                    return Some(y);
                }
                let th = leaf.theta(self.theta);
                let (x, tape) = (&self.inputs[*id], &self.tapes[*id]);
                let mut grads = Vec::with_capacity(b);
                let mut parts = Vec::with_capacity(b);
                for j in 0..b {
                    let yj = if b == 1 {
                        y_bar.clone()
                    } else {
                        chunk(&y_bar, j, n)
                    };
                    let mut g = vec![0.0; *np];
                    let xb = layer.vjp(th, x, tape, &yj, &mut g);
                    grads.push(g);
                    if need_input {
                        parts.push(xb);
                    }
                }
                if *np > 0 {
                    rev.grads[*id] = Some(grads);
                }
                need_input.then(|| concat(parts))
            }
            Node::Serial(children) => {
                let mut cur = Some(y_bar);
                for k in (0..children.len()).rev() {
                    let need = need_input || children[..k].iter().any(Node::has_params);
                    let cot = cur.take()?;
                    cur = self.reverse(&children[k], cot, need, b, rev);
                    if !need {
                        return None;
                    }
                }
                cur
            }
            Node::Residual(inner) => {
                if need_input {
                    let skip = y_bar.clone();
                    let mut a = self
                        .reverse(inner, y_bar, true, b, rev)
                        .expect("an input cotangent was asked for");
                    a.add_assign(&skip);
                    Some(a)
                } else {
                    self.reverse(inner, y_bar, false, b, rev);
                    None
                }
            }
            Node::Propagate(_) | Node::GraphAffine { .. } => {
                unreachable!("graph nodes are refused by Walk::for_route(SampleWise)")
            }
        }
    }

    fn tangent(
        &self,
        node: &Node<'a>,
        x_dot: Option<Batch>,
        b: usize,
        z: &mut [Option<Batch>],
        rev: &Reverse,
    ) -> Option<Batch> {
        let n = self.n;
        match node {
            Node::Affine {
                leaf,
                inp,
                out,
                weight,
                ..
            } => {
                let mut y = z[leaf.id].take().expect("affine term computed");
                if let Some(xd) = x_dot {
                    let w = MatRef::from_row_major_slice(
                        &self.theta[*weight..weight + inp * out],
                        *out,
                        *inp,
                    );
                    matmul(y.mat_mut(), Accum::Add, w, xd.mat(), 1.0, par());
                }
                Some(y)
            }
            Node::Elementwise(leaf) | Node::Opaque(leaf) => {
                let (layer, id, np) = (leaf.layer, &leaf.id, &leaf.np);
                if *np == 0 && x_dot.is_none() {
                    return None;
                }
                if let (Some(d), Some(mut y)) = (&self.diagonals[*id], x_dot.clone()) {
                    scale_columns(&mut y, d);
                    return Some(y);
                }
                let th = leaf.theta(self.theta);
                let (x, tape) = (&self.inputs[*id], &self.tapes[*id]);
                let zero_in = Batch::zeros(layer.in_dim(), n);
                let mut parts = Vec::with_capacity(b);
                for j in 0..b {
                    let xj = match &x_dot {
                        Some(xd) if b == 1 => xd.clone(),
                        Some(xd) => chunk(xd, j, n),
                        None => zero_in.clone(),
                    };
                    let td: &[f64] = match &rev.grads[*id] {
                        Some(g) => &g[j],
                        None => &[],
                    };
                    let td_zero;
                    let td = if td.len() == *np {
                        td
                    } else {
                        td_zero = vec![0.0; *np];
                        &td_zero
                    };
                    parts.push(layer.jvp(th, x, tape, &xj, td));
                }
                Some(concat(parts))
            }
            Node::Serial(children) => {
                let mut cur = x_dot;
                for c in children {
                    cur = self.tangent(c, cur, b, z, rev);
                }
                cur
            }
            Node::Residual(inner) => {
                let skip = x_dot.clone();
                let y = self.tangent(inner, x_dot, b, z, rev);
                match (y, skip) {
                    (Some(mut a), Some(s)) => {
                        a.add_assign(&s);
                        Some(a)
                    }
                    (a, s) => a.or(s),
                }
            }
            Node::Propagate(_) | Node::GraphAffine { .. } => {
                unreachable!("graph nodes are refused by Walk::for_route(SampleWise)")
            }
        }
    }

    /// The output cotangents Ū_l (d_l × n·b) of every affine layer, in forward order, for the b
    /// output cotangents in `v` (m × n·b, vector j in columns [j·n, (j+1)·n)).
    pub(crate) fn affine_cotangents(&self, v: Batch) -> Vec<Batch> {
        let b = v.n() / self.n;
        let count = self.inputs.len();
        let mut rev = Reverse {
            affine: (0..count).map(|_| None).collect(),
            grads: (0..count).map(|_| None).collect(),
        };
        self.reverse(&self.root, v, false, b, &mut rev);
        self.affine_ids()
            .into_iter()
            .map(|id| rev.affine[id].take().expect("affine cotangent"))
            .collect()
    }

    /// The kernels of the affine layers, in forward order.
    pub(crate) fn affine_kernels(&self) -> Vec<&Kernel> {
        self.affine_ids()
            .into_iter()
            .map(|id| self.kernels[id].as_ref().expect("kernel"))
            .collect()
    }

    /// H V for the columns of `v` (nm × b, index i·m + a as everywhere).
    pub fn apply_block(&mut self, v: MatRef<'_, f64>) -> Mat<f64> {
        let (n, m) = (self.n, self.m);
        let b = v.ncols();
        assert_eq!(v.nrows(), n * m, "apply_block: rows must be nm");
        let mut data = Vec::with_capacity(n * m * b);
        for j in 0..b {
            data.extend(v.col(j).iter().copied());
        }
        let y_bar = Batch::from_vec(m, n * b, data);
        let count = self.inputs.len();
        let mut rev = Reverse {
            affine: (0..count).map(|_| None).collect(),
            grads: (0..count).map(|_| None).collect(),
        };
        self.reverse(&self.root, y_bar, false, b, &mut rev);
        // Z_l = Ū_l K_l, vector by vector.
        let mut z: Vec<Option<Batch>> = rev
            .affine
            .iter_mut()
            .zip(&self.kernels)
            .map(|(u, k)| {
                let (u, k) = (u.take()?, k.as_ref()?);
                let mut zl = Batch::zeros(u.features(), u.n());
                for j in 0..b {
                    let uj = u.mat().subcols(j * n, n);
                    let zj = zl.mat_mut().subcols_mut(j * n, n);
                    k.apply(uj, zj);
                }
                Some(zl)
            })
            .collect();
        let out = self.tangent(&self.root, None, b, &mut z, &rev);
        self.products += b;
        let out = out.unwrap_or_else(|| Batch::zeros(m, n * b));
        let mut h = Mat::<f64>::zeros(n * m, b);
        for j in 0..b {
            let src = &out.as_slice()[j * n * m..(j + 1) * n * m];
            for (r, &s) in src.iter().enumerate() {
                h[(r, j)] = s;
            }
        }
        h
    }
}
