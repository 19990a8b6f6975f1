//! A rigorous bound on ‖J − J̃‖_F, J the exact Jacobian ∂u/∂θ and J̃ its f64 value from
//! [`super::gram::jacobian`] (or from forward-mode columns): the yardstick for "σ_{r+1}(J̃) is
//! rounding", since σ_{r+1}(J̃) ≤ σ_{r+1}(J) + ‖J − J̃‖_2 and ‖·‖_2 ≤ ‖·‖_F.
//!
//! Networks of dense layers, piecewise-linear activations through the origin with slopes in
//! [−1, 1] (ReLU, leaky ReLU, PReLU with |a| ≤ 1), parameter-free propagations, serial
//! composition and residual blocks — dnn, resnet and gcn — are covered; anything else is an
//! error naming the layer.

use crate::activation::Activation;
use crate::batch::Batch;
use crate::graph::{propagate_columns, SparseMatrix};
use crate::layers::activation::Mode;
use crate::layers::{ActivationLayer, GraphStructure, Layer, Structure, Tape};
use crate::model::Model;

/// γ_k = k·u/(1 − k·u) with u = 2⁻⁵³, the unit roundoff of f64 round-to-nearest.
fn gamma(k: f64) -> f64 {
    let u = f64::EPSILON / 2.0;
    k * u / (1.0 - k * u)
}

/// A bound on ‖J − J̃‖_F at θ on inputs x.
///
/// Argument (u = 2⁻⁵³, γ_k = k·u/(1 − k·u)). The *abs network* runs the same layers on |θ|, |x|
/// with |Â| for Â and the identity for σ (pieces s·z, |s| ≤ 1: |σ(z)| ≤ |z|, |σ'| ≤ 1,
/// |∂σ/∂a| ≤ |z|), so every subtraction becomes an addition. By induction over the layers every
/// exact intermediate q (value, forward tangent, reverse cotangent) has |q| ≤ q_abs and its f64
/// value |q̂ − q| ≤ γ_k·q_abs, k the roundings on its chain: an inner product of length ℓ adds ℓ
/// (|fl(aᵀb) − aᵀb| ≤ γ_ℓ|a|ᵀ|b| in any order, FMA or not), a product or sum 1, and
/// γ_a + γ_b + γ_aγ_b ≤ γ_{a+b} — provided σ' is taken on the exact piece, i.e. no ẑ lies within
/// γ_k·z_abs of a kink (checked, else Err). An entry of J̃, by a vjp row or a jvp column, is such
/// a chain ending in the parameter's cotangent product; the same chain on abs values is the
/// entry of J_abs, the abs network's Jacobian. So |J − J̃| ≤ γ_N·J_abs and
/// ‖J − J̃‖_F ≤ γ_N‖J_abs‖_F, N = Σ over layers of forward + tangent + cotangent + parameter
/// roundings: dense 3·fan-in + fan-out + 3 + t, activation 3 (PReLU + units·t + 2), propagation
/// 3·(most non-zeros in a row or column of Â), residual 3; t = n when samples mix, else 1 (other
/// samples' terms are exact zeros). ‖Ĵ_abs‖_F is raised by its own rounding factor. Err also for
/// σ outside the class or layers the bound cannot read.
///
/// Controlled layers (whole-batch controls, see [`crate::layers::activation`]) are read as they
/// evaluate: an entry on a frozen piece must lie on that piece (beyond its rounding bound); an
/// entry held on a kink (σ(z) = s·z through 0, |s| ≤ 1, the flow's sliding entries with their
/// effective slopes) is a fixed linear piece, so no kink check applies to it: J is then the
/// Jacobian of that piecewise choice (the Filippov field's), and its entries are the same
/// rounding chains.
pub fn jacobian_error_bound(model: &Model, theta: &[f64], x: &Batch) -> Result<f64, String> {
    let node = build(model.net.as_ref(), 0, "", theta)?;
    let (n, m, p) = (x.n(), model.out_dim(), model.p());
    let t = if model.net.mixes_samples() { n } else { 1 };
    let big_n = node.roundings(t) as f64;
    if big_n * f64::EPSILON > 0.1 {
        return Err(format!(
            "the rounding count N = {big_n} is too large for the bound"
        ));
    }
    let theta_abs: Vec<f64> = theta.iter().map(|v| v.abs()).collect();
    let mut x_abs = x.clone();
    x_abs.as_mut_slice().iter_mut().for_each(|v| *v = v.abs());
    let mut count = 0;
    let (_, _, trace) = node.forward(theta, &theta_abs, x, &x_abs, &mut count)?;
    let mut sum_sq = 0.0;
    let mut row = vec![0.0; p];
    for i in 0..n {
        for a in 0..m {
            let mut d = Batch::zeros(m, n);
            d.col_mut(i)[a] = 1.0;
            row.iter_mut().for_each(|v| *v = 0.0);
            node.backward(&theta_abs, &trace, d, &mut row);
            sum_sq += row.iter().map(|v| v * v).sum::<f64>();
        }
    }
    // Ĵ_abs ≥ J_abs·(1 − γ_N) (non-negative operands), and the norm of K = nm·p squares is
    // computed to a relative γ_{K+2}.
    let k = (n * m * p) as f64 + 2.0;
    if k * f64::EPSILON > 0.5 {
        return Err("J is too large for the norm's rounding factor".into());
    }
    let raise = 1.0 / ((1.0 - gamma(big_n)) * (1.0 - gamma(k)));
    Ok(gamma(big_n) * sum_sq.sqrt() * raise)
}

/// The network as the bound reads it.
enum Node<'a> {
    Affine {
        layer: &'a dyn Layer,
        offset: usize,
        inputs: usize,
        outputs: usize,
    },
    Activation {
        layer: &'a ActivationLayer,
        offset: usize,
        path: String,
    },
    /// y = X Pᵀ: the layer itself for the values, |P| (None: P = I) for the abs network.
    Propagate {
        layer: &'a dyn Layer,
        abs: Option<SparseMatrix>,
        most_nnz: usize,
    },
    Residual(Box<Node<'a>>),
    Serial(Vec<Node<'a>>),
}

/// What the forward pass keeps for the abs network's reverse pass.
enum Trace {
    Affine { x_abs: Batch, tape: Tape },
    Activation { z_abs: Batch },
    Propagate,
    Residual(Box<Trace>),
    Serial(Vec<Trace>),
}

fn join(path: &str, sub: &str) -> String {
    if path.is_empty() {
        sub.to_string()
    } else {
        format!("{path}.{sub}")
    }
}

/// Checks σ against the class of the bound: pieces s·z with |s| ≤ 1.
fn check_activation(act: &Activation, slope: f64, path: &str) -> Result<(), String> {
    let ok = match act {
        Activation::Relu => true,
        Activation::LeakyRelu { slope } => slope.abs() <= 1.0,
        Activation::Prelu { .. } => slope.abs() <= 1.0,
        Activation::Sigmoid => false,
        Activation::Piecewise(p) => p.coefficients.iter().all(|c| {
            c.first().is_none_or(|&c0| c0 == 0.0)
                && c.get(1).is_none_or(|c1| c1.abs() <= 1.0)
                && c.iter().skip(2).all(|&ck| ck == 0.0)
        }),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "activation layer `{path}` ({act}, slope {slope}) is not piecewise linear through 0 \
             with slopes in [-1, 1]: the bound does not apply"
        ))
    }
}

fn build<'a>(
    layer: &'a dyn Layer,
    offset: usize,
    path: &str,
    theta: &[f64],
) -> Result<Node<'a>, String> {
    let unsupported = || {
        format!(
            "layer `{path}` ({}) is outside the structures the bound reads",
            layer.describe()
        )
    };
    match layer.structure() {
        Structure::Elementwise(a) => {
            let slope = if layer.num_params() > 0 {
                theta[offset]
            } else {
                0.0
            };
            check_activation(&a.activation, slope, path)?;
            if a.control
                .lock()
                .as_ref()
                .is_some_and(|st| st.columns.is_some())
            {
                return Err(format!(
                    "activation layer `{path}` has its pieces set by a flow solve for a \
                     sub-batch"
                ));
            }
            Ok(Node::Activation {
                layer: a,
                offset,
                path: path.to_string(),
            })
        }
        Structure::Affine(affine) => Ok(Node::Affine {
            layer,
            offset,
            inputs: affine.inp,
            outputs: affine.out,
        }),
        Structure::Graph(GraphStructure::Propagate(pm)) => {
            let mut t = Vec::with_capacity(pm.nnz());
            let (mut rows, mut cols) = (vec![0; pm.n()], vec![0; pm.n()]);
            for (i, count) in rows.iter_mut().enumerate() {
                for (j, v) in pm.row(i) {
                    t.push((i, j, v.abs()));
                    *count += 1;
                    cols[j] += 1;
                }
            }
            let most = rows.into_iter().chain(cols).max().unwrap_or(0);
            Ok(Node::Propagate {
                layer,
                abs: Some(SparseMatrix::from_triplets(pm.n(), t)),
                most_nnz: most,
            })
        }
        Structure::Serial(children) => {
            let mut at = offset;
            let mut nodes = Vec::with_capacity(children.len());
            for (k, c) in children.into_iter().enumerate() {
                nodes.push(build(c, at, &join(path, &k.to_string()), theta)?);
                at += c.num_params();
            }
            Ok(Node::Serial(nodes))
        }
        Structure::Residual(inner) => Ok(Node::Residual(Box::new(build(
            inner,
            offset,
            &join(path, "fn"),
            theta,
        )?))),
        Structure::Graph(GraphStructure::Affine { .. }) | Structure::Opaque => Err(unsupported()),
    }
}

impl Node<'_> {
    /// N: the roundings any chain through this node can pick up (see the bound's doc); `t` = n
    /// for sample-mixing networks, else 1.
    fn roundings(&self, t: usize) -> usize {
        match self {
            Node::Affine {
                inputs, outputs, ..
            } => 3 * inputs + outputs + 3 + t,
            Node::Activation { layer, .. } => {
                3 + if layer.num_params() > 0 {
                    layer.dim * t + 2
                } else {
                    0
                }
            }
            Node::Propagate { most_nnz, .. } => 3 * most_nnz,
            Node::Residual(inner) => inner.roundings(t) + 3,
            Node::Serial(nodes) => nodes.iter().map(|c| c.roundings(t)).sum(),
        }
    }

    fn params(&self) -> usize {
        match self {
            Node::Affine { layer, .. } => layer.num_params(),
            Node::Activation { layer, .. } => layer.num_params(),
            Node::Propagate { .. } => 0,
            Node::Residual(inner) => inner.params(),
            Node::Serial(nodes) => nodes.iter().map(Node::params).sum(),
        }
    }

    fn offset(&self) -> Option<usize> {
        match self {
            Node::Affine { offset, .. } | Node::Activation { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    /// The f64 forward pass (same layer calls as the model's, hence the same values) and the abs
    /// network's, checking every pre-activation's piece; `count` = forward roundings so far.
    fn forward(
        &self,
        theta: &[f64],
        theta_abs: &[f64],
        x: &Batch,
        x_abs: &Batch,
        count: &mut usize,
    ) -> Result<(Batch, Batch, Trace), String> {
        let slice = |t: &'_ [f64]| -> Vec<f64> {
            let o = self.offset().unwrap_or(0);
            t[o..o + self.params()].to_vec()
        };
        match self {
            Node::Affine { layer, inputs, .. } => {
                *count += inputs + 1;
                let y = layer.forward(&slice(theta), x).0;
                let (y_abs, tape) = layer.forward(&slice(theta_abs), x_abs);
                Ok((
                    y,
                    y_abs,
                    Trace::Affine {
                        x_abs: x_abs.clone(),
                        tape,
                    },
                ))
            }
            Node::Activation { layer, path, .. } => {
                let g = gamma(*count as f64);
                let kinks = layer.activation.kinks();
                let control = layer.control.lock();
                for i in 0..x.n() {
                    for (u, (&z, &za)) in x.col(i).iter().zip(x_abs.col(i)).enumerate() {
                        let at = || format!("activation layer `{path}`, sample {i}, unit {u}");
                        let frozen = match layer.piece_of(&control, i, x.n(), u) {
                            Mode::Pinned(pin) => {
                                // Held on its kink: σ(z) = s·z with the solver's slope, exact.
                                if pin.knot != 0.0 || pin.value_at_knot != 0.0 {
                                    return Err(format!(
                                        "{}: held on the kink {} (value {}), not through 0",
                                        at(),
                                        pin.knot,
                                        pin.value_at_knot
                                    ));
                                }
                                if pin.slope.abs() > 1.0 || pin.slope.is_nan() {
                                    return Err(format!(
                                        "{}: held on its kink with slope {}, outside [-1, 1]",
                                        at(),
                                        pin.slope
                                    ));
                                }
                                continue;
                            }
                            Mode::Piece(k) => Some(k),
                            Mode::Free => None,
                        };
                        // g·za = 0: ẑ is exact, and so is its piece.
                        let r = g * za;
                        if let Some(b) = kinks.iter().find(|&&b| r > 0.0 && (z - b).abs() <= r) {
                            return Err(format!(
                                "{}: the pre-activation {z:e} is within its rounding bound {r:e} \
                                 of the kink {b}, so its piece is uncertain",
                                at()
                            ));
                        }
                        let own = kinks.partition_point(|&b| b < z);
                        if frozen.is_some_and(|k| k != own) {
                            return Err(format!(
                                "{}: evaluated on piece {} while the pre-activation {z:e} lies \
                                 on piece {own}",
                                at(),
                                frozen.unwrap_or(own)
                            ));
                        }
                    }
                }
                drop(control);
                *count += 1;
                let y = layer.forward(&slice(theta), x).0;
                Ok((
                    y,
                    x_abs.clone(),
                    Trace::Activation {
                        z_abs: x_abs.clone(),
                    },
                ))
            }
            Node::Propagate {
                layer,
                abs,
                most_nnz,
            } => {
                *count += most_nnz;
                let y = layer.forward(&[], x).0;
                let y_abs = match abs {
                    Some(pm) => propagate_columns(pm, x_abs, false),
                    None => x_abs.clone(),
                };
                Ok((y, y_abs, Trace::Propagate))
            }
            Node::Residual(inner) => {
                let (mut y, mut y_abs, tr) = inner.forward(theta, theta_abs, x, x_abs, count)?;
                *count += 1;
                y.add_assign(x);
                y_abs.add_assign(x_abs);
                Ok((y, y_abs, Trace::Residual(Box::new(tr))))
            }
            Node::Serial(nodes) => {
                let (mut h, mut h_abs) = (x.clone(), x_abs.clone());
                let mut traces = Vec::with_capacity(nodes.len());
                for c in nodes {
                    let (y, y_abs, tr) = c.forward(theta, theta_abs, &h, &h_abs, count)?;
                    h = y;
                    h_abs = y_abs;
                    traces.push(tr);
                }
                Ok((h, h_abs, Trace::Serial(traces)))
            }
        }
    }

    /// The abs network's reverse pass: returns the input cotangent of `d` and adds the
    /// parameter cotangent (one row of J_abs) into `row`.
    fn backward(&self, theta_abs: &[f64], trace: &Trace, d: Batch, row: &mut [f64]) -> Batch {
        match (self, trace) {
            (Node::Affine { layer, offset, .. }, Trace::Affine { x_abs, tape }) => {
                let r = *offset..*offset + layer.num_params();
                layer.vjp(&theta_abs[r.clone()], x_abs, tape, &d, &mut row[r])
            }
            (Node::Activation { layer, offset, .. }, Trace::Activation { z_abs }) => {
                if layer.num_params() > 0 {
                    row[*offset] += d.dot(z_abs);
                }
                d
            }
            (Node::Propagate { abs, .. }, Trace::Propagate) => match abs {
                Some(pm) => propagate_columns(pm, &d, true),
                None => d,
            },
            (Node::Residual(inner), Trace::Residual(tr)) => {
                let mut x_bar = inner.backward(theta_abs, tr, d.clone(), row);
                x_bar.add_assign(&d);
                x_bar
            }
            (Node::Serial(nodes), Trace::Serial(traces)) => {
                let mut d = d;
                for (c, tr) in nodes.iter().zip(traces).rev() {
                    d = c.backward(theta_abs, tr, d, row);
                }
                d
            }
            _ => unreachable!("internal error: a trace of another node"),
        }
    }
}
