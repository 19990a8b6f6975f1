//! Parameter initialisation, tensor by tensor from each layer's [`ParamSpec`]s, from a seeded
//! stream: PyTorch's `nn.Linear`/`nn.Conv2d` default (W, b ~ U(±1/√fan_in), i.e.
//! `kaiming_uniform_(a=√5)`), Kaiming normal (W ~ N(0, 2/fan_in), b = 0), or N(0, std²) for all.
//! The same scheme and seed give bit-identical θ.

use crate::layers::{ParamRole, ParamSpec};
use crate::rng::{stream, Stream};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal};

/// How θ is drawn.
#[derive(Clone, Debug, PartialEq)]
pub enum InitScheme {
    /// PyTorch's default for Linear and Conv: W, b ~ U(−1/√fan_in, 1/√fan_in).
    Torch,
    /// He et al.: W ~ N(0, 2/fan_in), b = 0 (PyTorch `kaiming_normal_`, leaky_relu with a = 0).
    KaimingNormal,
    /// Every weight and bias ~ N(0, std²).
    Normal { std: f64 },
}

impl InitScheme {
    pub fn name(&self) -> String {
        match self {
            Self::Torch => "torch".into(),
            Self::KaimingNormal => "kaiming-normal".into(),
            Self::Normal { std } => format!("normal(std={std})"),
        }
    }
}

/// Draws θ for tensors `specs` (in order) under `scheme` and `seed`.
pub fn init_params(specs: &[ParamSpec], scheme: &InitScheme, seed: u64) -> Vec<f64> {
    let mut rng = stream(seed, Stream::Init);
    let mut theta = Vec::with_capacity(specs.iter().map(ParamSpec::len).sum());
    for s in specs {
        for _ in 0..s.len() {
            let v = match (&s.role, scheme) {
                (ParamRole::Constant { value }, _) => *value,
                (ParamRole::Weight { fan_in } | ParamRole::Bias { fan_in }, InitScheme::Torch) => {
                    let bound = 1.0 / (*fan_in as f64).sqrt();
                    rng.random_range(-bound..bound)
                }
                (ParamRole::Weight { fan_in }, InitScheme::KaimingNormal) => {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    z * (2.0 / *fan_in as f64).sqrt()
                }
                (ParamRole::Bias { .. }, InitScheme::KaimingNormal) => 0.0,
                (_, InitScheme::Normal { std }) => {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    z * std
                }
            };
            theta.push(v);
        }
    }
    theta
}
