//! The element-wise activation layer y = σ(x). Parameter-free except for PReLU, whose single
//! trainable slope (PyTorch's `nn.PReLU()` default, one slope per layer) is this layer's θ.

use super::{no_tape, Batch, Layer, ParamRole, ParamSpec, PreActivation, Tape};
use crate::activation::Activation;

#[derive(Clone, Debug)]
pub struct ActivationLayer {
    pub activation: Activation,
    pub dim: usize,
}

impl ActivationLayer {
    pub fn new(activation: Activation, dim: usize) -> Self {
        Self { activation, dim }
    }
    fn slope(&self, theta: &[f64]) -> f64 {
        theta.first().copied().unwrap_or(0.0)
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
        for v in y.as_mut_slice() {
            *v = self.activation.value(*v, a);
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
        for (g, &z) in x_bar.as_mut_slice().iter_mut().zip(x.as_slice()) {
            *g *= self.activation.derivative(z, a);
        }
        if let Some(ga) = theta_bar.first_mut() {
            *ga += y_bar
                .as_slice()
                .iter()
                .zip(x.as_slice())
                .map(|(g, &z)| g * self.activation.slope_derivative(z))
                .sum::<f64>();
        }
        x_bar
    }

    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, x_dot: &Batch, theta_dot: &[f64]) -> Batch {
        let a = self.slope(theta);
        let a_dot = theta_dot.first().copied().unwrap_or(0.0);
        let mut y_dot = x_dot.clone();
        for (t, &z) in y_dot.as_mut_slice().iter_mut().zip(x.as_slice()) {
            *t =
                *t * self.activation.derivative(z, a) + a_dot * self.activation.slope_derivative(z);
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
        for (c, sc) in s.iter_mut().enumerate() {
            let z = x.col(c / reps);
            for (g, &zi) in x_bar.col_mut(c).iter_mut().zip(z) {
                *sc += *g * self.activation.slope_derivative(zi);
                *g *= self.activation.derivative(zi, a);
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

    fn visit_pre_activations(&self, x: &Batch, _: &Tape, visit: &mut dyn FnMut(PreActivation<'_>)) {
        visit(PreActivation {
            z: x,
            activation: &self.activation,
        });
    }
}
