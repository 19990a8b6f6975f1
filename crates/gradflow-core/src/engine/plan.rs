//! The engine's compiled form of a network: a chain of affine [`Stage`]s, each `z = W·src + b`
//! followed by σ (all but the last), with an optional residual skip (ResNet) or graph
//! propagation Â (GCN). Built from preset parameters, or recognised in a [`Model`] built by
//! [`crate::presets::dnn`], [`crate::presets::resnet`] or [`crate::presets::gcn`] from its
//! [`Preset`] and its layers' [`Structure`] (affine maps, activations, propagations, nesting).
//!
//! θ layout per stage (the presets' order): W (out × in, row-major), b (out), then PReLU's slope
//! when the stage has an activation and σ is PReLU.

use crate::activation::Activation;
use crate::config::Preset;
use crate::layers::{Affine, GraphStructure, Layer, Structure};
use crate::model::Model;

/// Where a stage propagates over the graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prop {
    None,
    /// z = W (Â src) + b.
    Before,
    /// z = Â (W src) + b — the same function, cheaper when out < in.
    After,
}

/// One affine stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub inp: usize,
    pub out: usize,
    /// Offset of W in θ.
    pub offset: usize,
    /// σ follows (every stage but the last).
    pub act: bool,
    /// σ is PReLU: one trainable slope after b.
    pub prelu: bool,
    /// h = src + σ(z).
    pub residual: bool,
    pub prop: Prop,
}

impl Stage {
    pub fn num_params(&self) -> usize {
        self.out * (self.inp + 1) + (self.act && self.prelu) as usize
    }
    /// (W, b, slope) of this stage in θ.
    pub fn params<'a, T: Copy>(&self, theta: &'a [T]) -> (&'a [T], &'a [T], Option<T>) {
        let wl = self.out * self.inp;
        let s = &theta[self.offset..self.offset + self.num_params()];
        let slope = (self.act && self.prelu).then(|| s[wl + self.out]);
        (&s[..wl], &s[wl..wl + self.out], slope)
    }
    /// (W, b, slope) of this stage in a gradient vector.
    pub fn params_mut<'a, T>(
        &self,
        g: &'a mut [T],
    ) -> (&'a mut [T], &'a mut [T], Option<&'a mut T>) {
        let wl = self.out * self.inp;
        let s = &mut g[self.offset..self.offset + self.num_params()];
        let (w, rest) = s.split_at_mut(wl);
        let (b, slope) = rest.split_at_mut(self.out);
        (w, b, slope.first_mut())
    }
}

/// Which preset a plan came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Dnn,
    Resnet,
    Gcn,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub arch: Arch,
    pub stages: Vec<Stage>,
}

impl Plan {
    fn chain(arch: Arch, widths: &[usize], prelu: bool, residual: usize) -> Self {
        let mut stages = Vec::new();
        let mut offset = 0;
        let last = widths.len() - 2;
        for (i, w) in widths.windows(2).enumerate() {
            let prop = match arch {
                Arch::Gcn if i == 0 || w[0] <= w[1] => Prop::Before,
                Arch::Gcn => Prop::After,
                _ => Prop::None,
            };
            let st = Stage {
                inp: w[0],
                out: w[1],
                offset,
                act: i < last,
                prelu,
                residual: i < residual,
                prop,
            };
            offset += st.num_params();
            stages.push(st);
        }
        Self { arch, stages }
    }
    /// [`crate::presets::dnn`].
    pub fn dnn(d: usize, hidden: &[usize], m: usize, act: &Activation) -> Self {
        let mut w = vec![d];
        w.extend_from_slice(hidden);
        w.push(m);
        Self::chain(Arch::Dnn, &w, act.num_params() > 0, 0)
    }
    /// [`crate::presets::resnet`].
    pub fn resnet(d: usize, depth: usize, m: usize, act: &Activation) -> Self {
        let mut w = vec![d; depth + 1];
        w.push(m);
        Self::chain(Arch::Resnet, &w, act.num_params() > 0, depth)
    }
    /// [`crate::presets::gcn`] (Â is given to the engine separately).
    pub fn gcn(d: usize, hidden: &[usize], m: usize, act: &Activation) -> Self {
        let mut w = vec![d];
        w.extend_from_slice(hidden);
        w.push(m);
        Self::chain(Arch::Gcn, &w, act.num_params() > 0, 0)
    }

    pub fn in_dim(&self) -> usize {
        self.stages[0].inp
    }
    /// The widest stage input or output (the size of a per-column buffer for any stage).
    pub fn max_width(&self) -> usize {
        self.stages
            .iter()
            .map(|s| s.inp.max(s.out))
            .max()
            .unwrap_or(0)
    }
    pub fn out_dim(&self) -> usize {
        self.stages.last().unwrap().out
    }
    pub fn num_params(&self) -> usize {
        self.stages.iter().map(Stage::num_params).sum()
    }

    /// Recognises a model built by the dnn, resnet or gcn preset, from its preset and the
    /// structure of its layers ([`Layer::structure`]); None for anything else.
    pub fn from_model(model: &Model) -> Option<Self> {
        let act = &model.activation;
        let Structure::Serial(top) = model.net.structure() else {
            return None;
        };
        // W (out × in) then b, as the stages read θ.
        let is_dense = |l: &dyn Layer, i: usize, o: usize| {
            matches!(l.structure(), Structure::Affine(a) if a == Affine::weight_then_bias(i, o))
                && l.num_params() == o * (i + 1)
        };
        let is_act = |l: &dyn Layer, w: usize| matches!(l.structure(), Structure::Elementwise(a) if a.dim == w && a.activation == *act);
        let is_prop = |l: &dyn Layer, w: usize| {
            matches!(
                l.structure(),
                Structure::Graph(GraphStructure::Propagate(_))
            ) && (l.in_dim(), l.out_dim()) == (w, w)
                && l.num_params() == 0
        };
        let (d, m) = (model.in_dim(), model.out_dim());
        let plan = match model.preset? {
            Preset::Dnn => {
                if top.len() % 2 != 1 {
                    return None;
                }
                let hidden: Vec<usize> = top
                    .chunks(2)
                    .take(top.len() / 2)
                    .map(|c| c[0].out_dim())
                    .collect();
                let plan = Self::dnn(d, &hidden, m, act);
                let ok = plan.stages.iter().enumerate().all(|(i, s)| {
                    is_dense(top[2 * i], s.inp, s.out) && (!s.act || is_act(top[2 * i + 1], s.out))
                });
                ok.then_some(plan)?
            }
            Preset::Resnet => {
                let depth = top.len().checked_sub(1)?;
                let plan = Self::resnet(d, depth, m, act);
                let ok = top[..depth].iter().all(|r| {
                    let Structure::Residual(branch) = r.structure() else {
                        return false;
                    };
                    matches!(branch.structure(), Structure::Serial(br)
                        if br.len() == 2 && is_dense(br[0], d, d) && is_act(br[1], d))
                }) && is_dense(top[depth], d, m);
                ok.then_some(plan)?
            }
            Preset::Gcn => {
                if top.len() % 3 != 2 {
                    return None;
                }
                let k = top.len() / 3;
                let hidden: Vec<usize> = (0..k).map(|i| top[3 * i + 1].out_dim()).collect();
                let plan = Self::gcn(d, &hidden, m, act);
                let ok = plan.stages.iter().enumerate().all(|(i, s)| {
                    is_prop(top[3 * i], s.inp)
                        && is_dense(top[3 * i + 1], s.inp, s.out)
                        && (!s.act || is_act(top[3 * i + 2], s.out))
                });
                ok.then_some(plan)?
            }
            _ => return None,
        };
        (plan.num_params() == model.p()).then_some(plan)
    }
}
