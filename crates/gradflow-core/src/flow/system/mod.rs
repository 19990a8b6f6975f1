//! The gradient-flow vector field of a piecewise-polynomial network, one smooth piece at a time,
//! with Filippov sliding on kink surfaces.
//!
//! **Pattern.** Every pre-activation entry e = (application, sample, unit) of every activation
//! layer has a frozen piece k_e of σ; the field f(θ) = −∇L(θ) is evaluated with σ continued
//! polynomially on that piece (through the layers' [`PieceControl`]s), so it is smooth and a
//! Runge–Kutta step keeps its order. Leaving the piece is an *event* (see `solve.rs`).
//!
//! **Entries of layers applied several times.** A layer applied k times per sample (the tower of
//! a Siamese pair, run on both halves) has k·n·dim entries, application-major
//! ((r·n + i)·dim + u, see [`crate::layers::activation`]). k is not declared by the layer or
//! its combinator: it is what the layer sees. At construction every layer is probed with an
//! empty control (σ evaluated as is, pre-activations recorded) through one forward pass, and k
//! is the number of columns it saw over n. Deriving rather than declaring means no combinator
//! can state a k that disagrees with the columns it actually stacks, and no trait method is
//! needed on every composite; the layer needs k per pass anyway (k = columns seen / sub-batch
//! size) to map a one-sample pass's columns to entries. What the layout requires is that all
//! applications go through the layer in *one* call, stacked as column blocks; a tower that
//! mixes samples runs once per half (two calls, each a whole graph signal) and is refused with
//! an error naming solver = "gd". The |f(a) − f(b)| of a pair is itself an activation layer
//! (σ = |t|, knot 0), so its kink is tracked (crossings, sliding) by the same mechanism.
//!
//! **Pinned entries (sliding).** On a kink surface z_e = b (a breakpoint of σ) the field on the
//! two sides differs only through σ'(z_e): for any slopes s of the pinned entries,
//! ∇L(θ; s) − ∇L(θ; s⁰) lies in span{∇z_j : j pinned} (a pinned entry's own forward value does
//! not depend on its slope, and an upstream pinned slope only rescales a downstream ∇z_j along
//! ∇z_upstream). The effective-slope (Filippov) field that keeps every pinned z_j on its kink is
//! therefore the orthogonal projection
//!
//! f = −(g − Rᵀ μ),  R = [∇z_j]_j (K × p),  G = R Rᵀ,  G μ = R g,  g = ∇L(θ; left slopes),
//!
//! whatever slopes are used for g. Its effective slopes are s_j = d⁻_j − μ_j / c_j with c_j the
//! cotangent at σ(z_j). For the decision to keep or release a pinned entry we need the normal
//! speed of z_j on either side with the *other* pinned entries held: by the Schur complement,
//! ż⁻_j = −μ_j / (G⁻¹)_jj on the left piece and ż⁺_j = ż⁻_j − (d⁺_j − d⁻_j) c_j / (G⁻¹)_jj on
//! the right. The entry slides while ż⁻_j > 0 > ż⁺_j (both sides push into the surface) and
//! leaves towards the side that pushes away otherwise. Only signs decide, and the ratio of the
//! two speeds, so the solver keeps them with the positive factor (G⁻¹)_jj replaced by 1/G_jj
//! = 1/‖∇z_j‖² (exact for a row orthogonal to the others): diag(G⁻¹) would cost a triangular
//! inverse per evaluation (`classify.rs`).
//!
//! **Cost.** Two routes compute the same field. The dnn and resnet presets go through the
//! compiled route (`compiled/`): the gradient on the engine's flat plan in two parts on
//! the two threads, and the rows ∇z_j by one multi-column reverse pass per sample, kept in
//! factored form (per-stage cotangents and inputs), their Gram matrix by matrix products and a
//! Cholesky factorisation, all in kept buffers. Every other network takes the general layer
//! path: reverse passes seeded at the pinned pre-activations through the layers' controls, for
//! networks that do not mix samples one one-sample forward pass per sample holding pinned
//! entries (of any layer and application) and a one-sample reverse pass per entry, for graph
//! networks a full-batch pass per entry (or one restricted to the nodes it reaches,
//! `graph_rows.rs`). The gcn preset's forward passes, gradient, pre-activations and pinned
//! cotangents come from the compiled passes (one part, Â in the passes), its pinned rows —
//! whose stage blocks are sums over the nodes a cotangent reaches, not one sample's outer
//! products — from support-restricted reverse passes on the compiled buffers as dense
//! p-vectors (`compiled/graph_rows.rs`), solved as on the layer path (`dense.rs`: the rows in
//! one kept buffer, their Gram matrix, pseudo-inverse and `last.rows`). Counts of each kind are
//! kept.

mod classify;
mod controls;
mod dense;
mod graph_rows;
mod held;
mod layer_path;
mod release;
#[cfg(test)]
mod tests;

use dense::norm;
pub use dense::Rows;
use layer_path::probe_entries;

use super::compiled::{Compiled, PinSlot};
use super::dopri::Field;
use crate::activation::Activation;
use crate::batch::Batch;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::layers::activation::{ControlState, Pin, PINNED};
use crate::layers::{ActivationLayer, Layer, Structure};
use crate::loss::LossKind;
use crate::model::Model;

/// Evaluation counts, for honest cost comparisons.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Full-batch loss-gradient evaluations (forward + reverse).
    pub gradients: u64,
    /// Full-batch forward passes without a reverse pass (event location, outputs).
    pub forwards: u64,
    /// One-sample forward + seeded reverse passes for rows ∇z_j of pinned entries.
    pub sample_passes: u64,
    /// Full-batch seeded reverse passes (networks that mix samples).
    pub seeded_full_passes: u64,
    /// Seeded reverse passes restricted to the nodes they reach (graph networks whose layers the
    /// sparse pass reads; `graph_rows.rs`), counted like one-sample passes in
    /// [`Counts::gradient_equivalents`] (an underestimate by the graph's mean reach).
    #[serde(default)]
    pub sparse_row_passes: u64,
}

impl Counts {
    /// Work in units of one full-batch gradient: a forward pass counted as 1/3, a one-sample
    /// pass as 1/n of a gradient.
    pub fn gradient_equivalents(&self, n: usize) -> f64 {
        self.gradients as f64
            + self.forwards as f64 / 3.0
            + (self.sample_passes + self.sparse_row_passes) as f64 / n.max(1) as f64
            + self.seeded_full_passes as f64
    }
}

/// What the last field evaluation found, in global entry order.
#[derive(Clone, Debug, Default)]
pub struct LastEval {
    pub loss: f64,
    /// Every pre-activation (global entry order).
    pub z: Vec<f64>,
    /// ‖∇L‖ of the (projected) field.
    pub field_norm: f64,
    /// Per pinned entry (in `pinned` order): normal speeds on the left/right piece.
    pub zdot_left: Vec<f64>,
    pub zdot_right: Vec<f64>,
    /// Per pinned entry: effective slope s_j of the Filippov field.
    pub slopes: Vec<f64>,
    /// True when this evaluation changed the slopes pinned entries are evaluated with.
    pub slopes_updated: bool,
    /// Per pinned entry: the slope it was evaluated with (the cotangents and multipliers of
    /// this evaluation hold for these slopes).
    pub evaluated_slopes: Vec<f64>,
    /// Rows ∇z_j and G⁻¹ at the last evaluation (for the drift projection).
    pub(super) rows: Rows,
    pub(super) g_inv: Vec<f64>,
}

impl LastEval {
    /// Becomes a copy of `o`, reusing this one's buffers.
    pub fn copy_from(&mut self, o: &LastEval) {
        self.loss = o.loss;
        self.z.clone_from(&o.z);
        self.field_norm = o.field_norm;
        self.zdot_left.clone_from(&o.zdot_left);
        self.zdot_right.clone_from(&o.zdot_right);
        self.slopes.clone_from(&o.slopes);
        self.slopes_updated = o.slopes_updated;
        self.evaluated_slopes.clone_from(&o.evaluated_slopes);
        self.rows.clone_from(&o.rows);
        self.g_inv.clone_from(&o.g_inv);
    }
}

/// One activation layer under control, with its place in the global entry order.
struct Controlled<'a> {
    layer: &'a ActivationLayer,
    offset: usize,
    /// Number of entries: applications per sample · n · dim.
    len: usize,
    knots: Vec<f64>,
}

/// The kink-aware gradient-flow field of one model on one dataset.
pub struct KinkSystem<'a> {
    model: &'a Model,
    data: &'a Dataset,
    loss: LossKind,
    layers: Vec<Controlled<'a>>,
    /// Piece per global entry (for pinned entries: the piece left of their knot).
    pub pieces: Vec<u16>,
    /// Pinned global entries (sorted).
    pub pinned: Vec<usize>,
    /// The slope each pinned entry is evaluated with (the last effective slope found, clamped
    /// to the kink's one-sided slopes; the field does not depend on it, the cotangents of
    /// upstream pinned entries do).
    pub pin_slopes: std::collections::BTreeMap<usize, f64>,
    pub counts: Counts,
    pub last: LastEval,
    grad: Vec<f64>,
    /// The compiled route (dnn/resnet/gcn presets), when the model is one and not disabled;
    /// for the gcn ([`Compiled::mixes_samples`]) with dense rows and the layer path's solve.
    compiled: Option<Compiled>,
    /// Buffers of the compiled route: cotangents at σ(z_j), R g, μ, diag(G⁻¹).
    cot: Vec<f64>,
    rg: Vec<f64>,
    mu: Vec<f64>,
    gdiag: Vec<f64>,
    slots: Vec<PinSlot>,
    first_layer: Vec<usize>,
    /// Buffers of [`Self::project_onto_knots`]: z_P − b_P and G⁻¹ of it.
    projection: (Vec<f64>, Vec<f64>),
    /// Buffers of the dense rows' projection (`dense.rs`).
    dense: dense::Workspace,
    /// Compute the normal speeds (diag(G⁻¹)) at the next evaluation (see [`Field::eval_stage`]).
    speeds: bool,
    /// Graph networks: the network as the support-restricted row pass reads it, and whether to
    /// use it (else whole-batch seeded passes).
    graph_rows: Option<graph_rows::RowNode<'a>>,
    sparse_graph_rows: bool,
    /// Layer path: each layer's remembered PReLU slope while its control is removed (an
    /// observer evaluates the ordinary network), so that re-installing keeps it.
    slopes_while_released: Vec<f64>,
}

/// The graph propagation Â of a network whose propagations all use the same matrix (the gcn
/// preset); None when it has none or several.
fn propagation_of(net: &dyn Layer) -> Option<std::sync::Arc<crate::graph::SparseMatrix>> {
    fn walk(l: &dyn Layer, found: &mut Vec<std::sync::Arc<crate::graph::SparseMatrix>>) {
        if let Structure::Graph(crate::layers::GraphStructure::Propagate(m)) = l.structure() {
            found.push(m);
        }
        for c in l.children() {
            walk(c, found);
        }
    }
    let mut found = Vec::new();
    walk(net, &mut found);
    let first = found.first()?.clone();
    found
        .iter()
        .all(|m| std::sync::Arc::ptr_eq(m, &first) || **m == *first)
        .then_some(first)
}

pub(super) fn collect<'a>(l: &'a dyn Layer, out: &mut Vec<&'a ActivationLayer>) {
    if let Structure::Elementwise(a) = l.structure() {
        out.push(a);
    }
    for c in l.children() {
        collect(c, out);
    }
}

impl<'a> KinkSystem<'a> {
    /// Takes control of the model's activation layers; pieces start where θ puts them. With
    /// `compiled`, a dnn, resnet or gcn preset is evaluated by the compiled route
    /// ([`Compiled`]), checked against the layer path's pre-activations at θ.
    pub fn new(
        model: &'a Model,
        data: &'a Dataset,
        loss: LossKind,
        theta: &[f64],
        compiled: bool,
    ) -> Result<Self> {
        let mut acts = Vec::new();
        collect(model.net.as_ref(), &mut acts);
        let lens = probe_entries(model, data, theta, &acts)?;
        let mut layers = Vec::new();
        let mut offset = 0;
        for (layer, len) in acts.into_iter().zip(lens) {
            layers.push(Controlled {
                layer,
                offset,
                len,
                knots: layer.activation.kinks(),
            });
            offset += len;
        }
        let mut sys = Self {
            model,
            data,
            loss,
            layers,
            pieces: vec![0; offset],
            pinned: Vec::new(),
            pin_slopes: Default::default(),
            counts: Counts::default(),
            last: LastEval::default(),
            grad: vec![0.0; model.p()],
            compiled: None,
            cot: Vec::new(),
            rg: Vec::new(),
            mu: Vec::new(),
            gdiag: Vec::new(),
            slots: Vec::new(),
            first_layer: Vec::new(),
            projection: Default::default(),
            dense: Default::default(),
            speeds: true,
            graph_rows: None,
            sparse_graph_rows: true,
            slopes_while_released: Vec::new(),
        };
        if model.net.mixes_samples() {
            sys.graph_rows = graph_rows::build(model.net.as_ref(), &sys.layers);
        }
        // The probe's forward pass.
        sys.counts.forwards += 1;
        // Layer l's pre-activations depend only on the pieces of layers before it: settle the
        // pattern layer by layer (at most one pass per activation layer).
        for _ in 0..=sys.layers.len() {
            sys.install();
            sys.forward_z(theta)?;
            let mut changed = false;
            for l in &sys.layers {
                for (j, &z) in sys.last.z[l.offset..l.offset + l.len].iter().enumerate() {
                    let k = l.knots.partition_point(|&b| b < z) as u16;
                    changed |= sys.pieces[l.offset + j] != k;
                    sys.pieces[l.offset + j] = k;
                }
            }
            if !changed {
                break;
            }
        }
        sys.install();
        if compiled {
            sys.compiled = sys.compile(theta);
            if sys.compiled.is_some() {
                sys.uninstall();
                sys.install();
            }
        }
        Ok(sys)
    }

    /// The compiled route for this model, if it is a dnn/resnet/gcn preset whose compiled
    /// passes reproduce the layer path's loss and pre-activations at θ (to 1e-10 relative).
    fn compile(&mut self, theta: &[f64]) -> Option<Compiled> {
        let plan = crate::engine::Plan::from_model(self.model)?;
        let n = self.data.n();
        let a_hat = match plan
            .stages
            .iter()
            .any(|s| s.prop != crate::engine::Prop::None)
        {
            true => Some(propagation_of(self.model.net.as_ref())?),
            false => None,
        };
        let mut c = Compiled::new(
            plan,
            self.model.activation.clone(),
            self.data.x.as_slice(),
            self.data.y.as_slice(),
            n,
            self.loss,
            a_hat.as_deref(),
        )?;
        if c.entries() != self.pieces.len() {
            return None;
        }
        let mut z = vec![0.0; self.pieces.len()];
        let l = c.forward(theta, &self.pieces, Some(&mut z));
        let reference = self.forward_z(theta).ok()?;
        self.counts.forwards -= 1;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-10 * (1.0 + b.abs());
        let same = close(l, reference) && z.iter().zip(&self.last.z).all(|(&a, &b)| close(a, b));
        same.then_some(c)
    }

    /// Graph networks: whether pinned rows come from support-restricted reverse passes (the
    /// default where the network's layers allow) or whole-batch ones (for comparisons).
    pub fn set_sparse_graph_rows(&mut self, on: bool) {
        self.sparse_graph_rows = on;
    }

    /// True when the pinned rows of this graph network can come from support-restricted passes.
    pub fn has_sparse_graph_rows(&self) -> bool {
        self.graph_rows.is_some()
    }

    /// True when the compiled route evaluates the field.
    pub fn is_compiled(&self) -> bool {
        self.compiled.is_some()
    }

    /// Number of controlled pre-activation entries.
    pub fn entries(&self) -> usize {
        self.pieces.len()
    }

    /// The rows ∇_θ z_j of the pinned entries at the last evaluation, in `pinned` order (the
    /// general layer path, and the gcn's compiled route; empty on the compiled route of
    /// networks that do not mix samples, which keeps them factored).
    pub fn last_rows(&self) -> &Rows {
        &self.last.rows
    }

    fn layer_of(&self, e: usize) -> usize {
        self.layers
            .partition_point(|l| l.offset <= e)
            .saturating_sub(1)
    }

    /// The knot a pinned entry sits on (its piece index is the piece left of that knot).
    pub fn knot_of(&self, e: usize) -> f64 {
        self.layers[self.layer_of(e)].knots[self.pieces[e] as usize]
    }

    /// The distance of entry e inside its frozen piece (negative: it has left the piece).
    pub fn inside(&self, e: usize, z: f64) -> f64 {
        let knots = &self.layers[self.layer_of(e)].knots;
        super::events::inside(knots, self.pieces[e] as usize, z)
    }

    /// (first entry, end, knots) of every activation layer, in entry order.
    pub fn layer_ranges(&self) -> impl Iterator<Item = (usize, usize, &[f64])> + '_ {
        self.layers
            .iter()
            .map(|l| (l.offset, l.offset + l.len, l.knots.as_slice()))
    }

    /// Knot k of entry e's activation (the upper end of piece k).
    pub fn knot_of_piece(&self, e: usize, k: usize) -> f64 {
        self.layers[self.layer_of(e)].knots[k]
    }

    /// (activation layer, training sample) of global entry e (of any application).
    pub(super) fn entry_place(&self, e: usize) -> (usize, usize) {
        let li = self.layer_of(e);
        let l = &self.layers[li];
        (li, ((e - l.offset) / l.layer.dim) % self.data.n())
    }

    /// Number of training samples.
    pub fn samples(&self) -> usize {
        self.data.n()
    }

    /// Number of pieces of the activation of entry e's layer.
    pub fn pieces_of(&self, e: usize) -> usize {
        self.layers[self.layer_of(e)].knots.len() + 1
    }

    /// A forward pass only: the loss and every pre-activation at θ (for event location).
    pub fn forward_z(&mut self, theta: &[f64]) -> Result<f64> {
        if let Some(c) = self.compiled.as_mut() {
            self.last.z.resize(self.pieces.len(), 0.0);
            let l = c.forward(theta, &self.pieces, Some(&mut self.last.z));
            self.counts.forwards += 1;
            self.last.loss = l;
            return Ok(l);
        }
        let out = self.model.outputs(theta, &self.data.x);
        self.counts.forwards += 1;
        self.gather_z()?;
        let l = self.loss.value(&out, &self.data.y);
        self.last.loss = l;
        Ok(l)
    }

    /// L(θ) by a forward pass on the frozen pattern, leaving `last` untouched (outputs).
    pub fn loss_at(&mut self, theta: &[f64]) -> Result<f64> {
        if let Some(c) = self.compiled.as_mut() {
            self.counts.forwards += 1;
            return Ok(c.forward(theta, &self.pieces, None));
        }
        let out = self.model.outputs(theta, &self.data.x);
        self.counts.forwards += 1;
        for l in &self.layers {
            if let Some(st) = l.layer.control.lock().as_mut() {
                st.calls = 0;
            }
        }
        Ok(self.loss.value(&out, &self.data.y))
    }

    /// The field at θ (projected when entries are pinned), plus loss, z and the pinned entries'
    /// normal speeds in `self.last`.
    pub fn evaluate(&mut self, theta: &[f64], out: &mut [f64]) -> Result<()> {
        let l = if let Some(c) = self.compiled.as_mut() {
            self.last.z.resize(self.pieces.len(), 0.0);
            c.gradient(
                theta,
                &self.pieces,
                &self.pinned,
                &mut self.grad,
                &mut self.last.z,
                &mut self.cot,
            )
            .loss
        } else {
            let (x, y) = (&self.data.x, &self.data.y);
            let (l, _) = self
                .model
                .loss_and_grad(theta, x, y, self.loss, &mut self.grad);
            self.gather_z()?;
            l
        };
        self.counts.gradients += 1;
        self.last.loss = l;
        if !l.is_finite() || self.grad.iter().any(|g| !g.is_finite()) {
            return Err(Error::Diverged(format!(
                "the loss or its gradient stopped being finite during the flow solve (loss {l:e})"
            )));
        }
        for (o, g) in out.iter_mut().zip(&self.grad) {
            *o = -g;
        }
        let k = self.pinned.len();
        if k == 0 {
            self.last.field_norm = norm(&self.grad);
            self.last.slopes_updated = false;
            self.last.zdot_left.clear();
            self.last.zdot_right.clear();
            self.last.slopes.clear();
            self.last.rows.clear();
            return Ok(());
        }
        let (mut c, mut mu, mut gdiag) = (
            std::mem::take(&mut self.cot),
            std::mem::take(&mut self.mu),
            std::mem::take(&mut self.gdiag),
        );
        gdiag.clear();
        if let Some(cf) = self.compiled.as_mut().filter(|c| !c.mixes_samples()) {
            self.counts.sample_passes += cf.rows(theta, &self.pieces, &self.pinned) as u64;
            let par = crate::batch::par();
            cf.factor(par);
            cf.rows_dot(&self.grad, &mut self.rg);
            cf.solve(&self.rg, &mut mu, par);
            cf.add_rows_t(&mu, out);
            if self.speeds {
                cf.inverse_row_norms(&mut gdiag);
            } else {
                gdiag.resize(k, f64::NAN);
            }
        } else {
            match self.compiled.as_mut() {
                Some(cf) => {
                    let rows = &mut self.last.rows;
                    let passes = cf.dense_rows(theta, &self.pieces, &self.pinned, rows);
                    self.counts.sparse_row_passes += passes as u64;
                }
                None => {
                    c = self.recorded_cotangents();
                    let mut rows = std::mem::take(&mut self.last.rows);
                    let filled = self.pinned_rows(theta, &mut rows);
                    self.last.rows = rows;
                    filled?;
                }
            }
            let solved = dense::Projected {
                g_inv: &mut self.last.g_inv,
                mu: &mut mu,
                scale: &mut gdiag,
            };
            let par = crate::batch::par();
            dense::project(
                &self.last.rows,
                &self.grad,
                out,
                &mut self.dense,
                par,
                solved,
            );
        }
        self.last.field_norm = norm(out);
        self.classify(&c, &mu, &gdiag);
        (self.cot, self.mu, self.gdiag) = (c, mu, gdiag);
        Ok(())
    }

    /// Pulls pinned entries back onto their knots after a step: θ ← θ − Rᵀ G⁻¹ (z_P − b_P),
    /// one Gauss–Newton step with the rows of the last evaluation (which was at θ).
    pub fn project_onto_knots(&mut self, theta: &mut [f64]) {
        let k = self.pinned.len();
        // Own buffers: μ and R g of the last evaluation stay valid (see `release.rs`).
        let (mut gap, mut w) = std::mem::take(&mut self.projection);
        gap.clear();
        gap.extend(
            self.pinned
                .iter()
                .map(|&e| self.last.z[e] - self.knot_of(e)),
        );
        if let Some(mut c) = self.compiled.take_if(|c| !c.mixes_samples()) {
            if k > 0 && c.rows_match(&self.pinned) {
                c.solve(&gap, &mut w, crate::batch::par());
                for m in w.iter_mut() {
                    *m = -*m;
                }
                c.add_rows_t(&w, theta);
            }
            self.compiled = Some(c);
        } else if k > 0 && self.last.rows.len() == k {
            let g_inv = &self.last.g_inv;
            w.clear();
            w.extend((0..k).map(|i| -(0..k).map(|j| g_inv[i * k + j] * gap[j]).sum::<f64>()));
            self.last.rows.add_transposed(&w, theta);
        }
        self.projection = (gap, w);
    }
}

impl Field for KinkSystem<'_> {
    fn eval(&mut self, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.evaluate(y, out)
    }

    /// The field without the pinned entries' normal speeds (NaN: no event test reads a stage).
    fn eval_stage(&mut self, y: &[f64], out: &mut [f64]) -> Result<()> {
        self.speeds = false;
        let r = self.evaluate(y, out);
        self.speeds = true;
        r
    }
}

impl Drop for KinkSystem<'_> {
    fn drop(&mut self) {
        self.uninstall();
    }
}
