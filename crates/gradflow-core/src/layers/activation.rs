//! The element-wise activation layer y = σ(x). Parameter-free except for PReLU, whose single
//! trainable slope (PyTorch's `nn.PReLU()` default, one slope per layer) is this layer's θ.
//!
//! Each layer also carries a [`PieceControl`]: empty in ordinary use, it is filled by the
//! kink-aware gradient-flow solver (`crate::flow`) to (1) freeze which polynomial piece of σ
//! every pre-activation uses, so that the vector field is one smooth polynomial field across a
//! Runge–Kutta step; (2) record the pre-activations of a forward pass and the output cotangents
//! of a reverse pass at chosen entries; (3) inject seed cotangents at chosen pre-activations, so
//! that one reverse pass yields ∇_θ z_k for a pinned pre-activation z_k.
//!
//! **Entries.** A layer may be applied k times per sample (a shared tower applied to both
//! halves of a pair, the applications stacked as column blocks: for an n-column batch the layer
//! sees k·n columns, [application 0 of samples 0…n−1, application 1 of samples 0…n−1, …]).
//! Its entries are then the slots s = r·n + i (application r, training sample i) times dim,
//! plus the unit: (r·n + i)·dim + u. On the whole training batch, column c is slot c. `columns`
//! maps the columns of a sub-batch (one sample, for cheap per-sample passes) back to training
//! samples: the layer sees k·n_sub columns for the n_sub listed samples, and column
//! r·n_sub + c is slot r·n + (sample c of `columns`). So k is never declared: it is what the
//! layer sees.

use super::{no_tape, Batch, Layer, ParamRole, ParamSpec, PreActivation, Structure, Tape};
use crate::activation::Activation;
use std::sync::{Arc, Mutex, MutexGuard};

/// Marks an entry pinned to a kink in [`ControlState::pieces`].
pub const PINNED: u16 = u16::MAX;

/// An entry held on a kink b: σ(z) = σ(b) + s·(z − b) with the slope s the solver chose.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pin {
    pub entry: usize,
    pub knot: f64,
    pub value_at_knot: f64,
    pub slope: f64,
}

/// What the flow solver asks of one activation layer (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct ControlState {
    /// Piece of σ per training entry (r·n + i)·dim + u ([`PINNED`]: see `pins`). Empty: a
    /// probe, every entry evaluated by σ itself (the flow solver learns the entry count so).
    pub pieces: Vec<u16>,
    /// Pinned entries, sorted by entry.
    pub pins: Vec<Pin>,
    /// Training sample of each column of the sub-batch being evaluated (None: the whole
    /// training batch, column c = slot c); see the module docs.
    pub columns: Option<Vec<usize>>,
    /// Training samples n (the slot of application r of sample i is r·n + i; 0 is read as
    /// one application).
    pub samples: usize,
    /// Cotangents added at these pre-activation entries in the next reverse passes.
    pub seeds: Vec<(usize, f64)>,
    /// Entries whose output cotangent ȳ the reverse pass records into `recorded`.
    pub record: Vec<usize>,
    pub recorded: Vec<f64>,
    /// When true, forward passes copy the pre-activations into `z` (training-entry order).
    pub record_z: bool,
    pub z: Vec<f64>,
    /// PReLU's slope a in the last forward pass (σ's one-sided derivatives at a kink need it).
    pub slope: f64,
    /// Forward passes through this layer since the counter was last reset (the entry layout
    /// needs all applications of a forward pass in one call, stacked as columns).
    pub calls: usize,
}

impl ControlState {
    /// The slot r·n + i of column `col` of a batch of `cols` columns (see the module docs).
    #[inline]
    fn slot(&self, col: usize, cols: usize) -> usize {
        match &self.columns {
            None => col,
            Some(c) => {
                let n_sub = c.len().max(1);
                debug_assert_eq!(cols % n_sub, 0, "k·n_sub columns expected");
                (col / n_sub) * self.samples + c[col % n_sub]
            }
        }
    }

    /// The column holding `slot` in a batch of `cols` columns, if it is there.
    fn column_of(&self, slot: usize, cols: usize) -> Option<usize> {
        let col = match &self.columns {
            None => slot,
            Some(c) => {
                let r = slot.checked_div(self.samples).unwrap_or(0);
                let i = slot.checked_rem(self.samples).unwrap_or(slot);
                r * c.len() + c.iter().position(|&s| s == i)?
            }
        };
        (col < cols).then_some(col)
    }
}

/// How one entry is evaluated: by σ itself, on a frozen polynomial piece of σ, or held on a
/// kink (linear through it with the solver's slope).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    Free,
    Piece(usize),
    Pinned(Pin),
}

/// Shared, lockable control slot of an activation layer (empty unless a flow solve runs).
#[derive(Debug, Default)]
pub struct PieceControl {
    state: Mutex<Option<ControlState>>,
}

impl PieceControl {
    /// The slot's state for reading or changing (None when uncontrolled).
    pub fn lock(&self) -> MutexGuard<'_, Option<ControlState>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Clone, Debug)]
pub struct ActivationLayer {
    pub activation: Activation,
    pub dim: usize,
    /// The flow solver's control slot (see the module docs).
    pub control: Arc<PieceControl>,
}

impl ActivationLayer {
    pub fn new(activation: Activation, dim: usize) -> Self {
        Self {
            activation,
            dim,
            control: Arc::new(PieceControl::default()),
        }
    }
    fn slope(&self, theta: &[f64]) -> f64 {
        theta.first().copied().unwrap_or(0.0)
    }
    /// How the control evaluates the batch entry (col, u); `Free` when uncontrolled.
    #[inline]
    pub fn piece_of(&self, st: &Option<ControlState>, col: usize, cols: usize, u: usize) -> Mode {
        let Some(st) = st.as_ref() else {
            return Mode::Free;
        };
        let e = st.slot(col, cols) * self.dim + u;
        match st.pieces.get(e) {
            None => Mode::Free,
            Some(&PINNED) => {
                let k = st.pins.partition_point(|p| p.entry < e);
                Mode::Pinned(st.pins[k])
            }
            Some(&k) => Mode::Piece(k as usize),
        }
    }
    /// The control's reverse-pass duties: record ȳ at the requested entries, add the seeds.
    fn inject(&self, st: &mut ControlState, y_bar: &Batch, x_bar: &mut Batch) {
        let (dim, n) = (self.dim, x_bar.n());
        let col_of = |st: &ControlState, entry: usize| st.column_of(entry / dim, n);
        if !st.record.is_empty() {
            let rec: Vec<f64> = st
                .record
                .iter()
                .map(|&e| col_of(st, e).map_or(f64::NAN, |c| y_bar.col(c)[e % dim]))
                .collect();
            st.recorded = rec;
        }
        for k in 0..st.seeds.len() {
            let (e, v) = st.seeds[k];
            if let Some(c) = col_of(st, e) {
                x_bar.col_mut(c)[e % dim] += v;
            }
        }
    }
    /// (σ, σ', ∂σ/∂a) at z on the piece chosen by the control (or by z itself).
    #[inline]
    pub fn eval(&self, piece: Mode, z: f64, a: f64) -> (f64, f64, f64) {
        match piece {
            Mode::Pinned(p) => (p.value_at_knot + p.slope * (z - p.knot), p.slope, 0.0),
            Mode::Piece(k) => (
                self.activation.piece_value(k, z, a),
                self.activation.piece_derivative(k, z, a),
                self.activation.piece_slope_derivative(k, z),
            ),
            Mode::Free => (
                self.activation.value(z, a),
                self.activation.derivative(z, a),
                self.activation.slope_derivative(z),
            ),
        }
    }
}

impl Layer for ActivationLayer {
    fn describe(&self) -> String {
        format!("{} ({})", self.activation, self.dim)
    }
    fn in_dim(&self) -> usize {
        self.dim
    }
    fn out_dim(&self) -> usize {
        self.dim
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        match self.activation {
            Activation::Prelu { init } => vec![ParamSpec {
                name: "weight".into(),
                shape: vec![1],
                role: ParamRole::Constant { value: init },
            }],
            _ => vec![],
        }
    }
    fn num_params(&self) -> usize {
        self.activation.num_params()
    }

    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let a = self.slope(theta);
        let mut y = x.clone();
        let mut guard = self.control.lock();
        if guard.is_none() {
            for v in y.as_mut_slice() {
                *v = self.activation.value(*v, a);
            }
            return (y, no_tape());
        }
        let cols = x.n();
        for col in 0..cols {
            for (u, v) in y.col_mut(col).iter_mut().enumerate() {
                *v = self.eval(self.piece_of(&guard, col, cols, u), *v, a).0;
            }
        }
        if let Some(st) = guard.as_mut() {
            st.slope = a;
            st.calls += 1;
        }
        if let Some(st) = guard.as_mut().filter(|st| st.record_z) {
            for col in 0..cols {
                let s = st.slot(col, cols);
                let need = (s + 1) * self.dim;
                if st.z.len() < need {
                    st.z.resize(need, 0.0);
                }
                st.z[s * self.dim..need].copy_from_slice(x.col(col));
            }
        }
        (y, no_tape())
    }

    fn vjp(
        &self,
        theta: &[f64],
        x: &Batch,
        _: &Tape,
        y_bar: &Batch,
        theta_bar: &mut [f64],
    ) -> Batch {
        let a = self.slope(theta);
        let mut x_bar = y_bar.clone();
        let mut guard = self.control.lock();
        let mut ga = 0.0;
        let cols = x.n();
        for col in 0..cols {
            let z = x.col(col);
            for (u, g) in x_bar.col_mut(col).iter_mut().enumerate() {
                let (_, d, da) = self.eval(self.piece_of(&guard, col, cols, u), z[u], a);
                ga += *g * da;
                *g *= d;
            }
        }
        if let Some(st) = guard.as_mut() {
            self.inject(st, y_bar, &mut x_bar);
        }
        if let Some(t) = theta_bar.first_mut() {
            *t += ga;
        }
        x_bar
    }

    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, x_dot: &Batch, theta_dot: &[f64]) -> Batch {
        let a = self.slope(theta);
        let a_dot = theta_dot.first().copied().unwrap_or(0.0);
        let mut y_dot = x_dot.clone();
        let guard = self.control.lock();
        let cols = x.n();
        for col in 0..cols {
            let z = x.col(col);
            for (u, t) in y_dot.col_mut(col).iter_mut().enumerate() {
                let (_, d, da) = self.eval(self.piece_of(&guard, col, cols, u), z[u], a);
                *t = *t * d + a_dot * da;
            }
        }
        y_dot
    }

    /// Structured NTK pass: x̄_c = ȳ_c ⊙ σ'(z_{c/reps}); PReLU's slope cotangent per column is
    /// s_c = Σ ȳ_c ⊙ min(z, 0), contributing s sᵀ.
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        _: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut faer::Mat<f64>,
    ) -> Batch {
        let a = self.slope(theta);
        let mut x_bar = y_bar.clone();
        let mut s = vec![0.0; y_bar.n()];
        let guard = self.control.lock();
        for (c, sc) in s.iter_mut().enumerate() {
            let z = x.col(c / reps);
            for (u, g) in x_bar.col_mut(c).iter_mut().enumerate() {
                let (_, d, da) = self.eval(self.piece_of(&guard, c / reps, x.n(), u), z[u], a);
                *sc += *g * da;
                *g *= d;
            }
        }
        if self.num_params() > 0 {
            for (j, &sj) in s.iter().enumerate() {
                let mut col = gram.as_mut().col_mut(j);
                for (i, &si) in s.iter().enumerate() {
                    col[i] += si * sj;
                }
            }
        }
        x_bar
    }

    fn structure(&self) -> Structure<'_> {
        Structure::Elementwise(self)
    }

    fn visit_pre_activations(&self, x: &Batch, _: &Tape, visit: &mut dyn FnMut(PreActivation<'_>)) {
        visit(PreActivation {
            z: x,
            activation: &self.activation,
        });
    }
}
