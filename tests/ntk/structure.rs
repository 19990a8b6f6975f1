//! The NTK routes follow each layer's typed structure (`Layer::structure`), never its
//! description: networks whose layers are wrapped in a delegate that forwards everything,
//! `structure()` included, but describes itself in other words take the same structured routes
//! (dense Gram, matrix-free products, graph Gram) with the same matrices as the originals, equal
//! to the Jacobian route's to 1e-12. A layer that keeps its structure to itself is opaque and
//! takes the generic routes; an affine map without bias, told only by its structure, takes every
//! structured route.

use faer::Mat;
use gradflow::activation::Activation;
use gradflow::data::Dataset;
use gradflow::graph::Graph;
use gradflow::init::{init_params, InitScheme};
use gradflow::layers::{
    no_tape, ActivationLayer, Affine, Dense, Layer, ParamRole, ParamSpec, PreActivation, Propagate,
    Residual, Serial, Structure, Tape,
};
use gradflow::model::Model;
use gradflow::ntk::graph_gram::graph_gram;
use gradflow::ntk::{self, GramRoute, NtkOptions, StructuredNtk};
use gradflow::Batch;
use std::sync::Arc;

/// A layer that forwards every method to `inner` but describes itself in other words (or, with
/// `opaque`, also keeps its structure to itself).
#[derive(Debug)]
struct Reworded {
    inner: Box<dyn Layer>,
    opaque: bool,
}

fn reworded(inner: impl Layer + 'static) -> Box<dyn Layer> {
    Box::new(Reworded {
        inner: Box::new(inner),
        opaque: false,
    })
}

fn hidden(inner: impl Layer + 'static) -> Box<dyn Layer> {
    Box::new(Reworded {
        inner: Box::new(inner),
        opaque: true,
    })
}

impl Layer for Reworded {
    fn describe(&self) -> String {
        format!("block of {} parameters", self.inner.num_params())
    }
    fn in_dim(&self) -> usize {
        self.inner.in_dim()
    }
    fn out_dim(&self) -> usize {
        self.inner.out_dim()
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        self.inner.param_specs()
    }
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        self.inner.forward(theta, x)
    }
    fn vjp(&self, theta: &[f64], x: &Batch, tape: &Tape, y_bar: &Batch, tb: &mut [f64]) -> Batch {
        self.inner.vjp(theta, x, tape, y_bar, tb)
    }
    fn jvp(&self, theta: &[f64], x: &Batch, tape: &Tape, xd: &Batch, td: &[f64]) -> Batch {
        self.inner.jvp(theta, x, tape, xd, td)
    }
    fn vjp_gram(
        &self,
        theta: &[f64],
        x: &Batch,
        tape: &Tape,
        y_bar: &Batch,
        reps: usize,
        gram: &mut Mat<f64>,
    ) -> Batch {
        self.inner.vjp_gram(theta, x, tape, y_bar, reps, gram)
    }
    fn visit_pre_activations(
        &self,
        x: &Batch,
        tape: &Tape,
        visit: &mut dyn FnMut(PreActivation<'_>),
    ) {
        self.inner.visit_pre_activations(x, tape, visit)
    }
    fn children(&self) -> Vec<&dyn Layer> {
        self.inner.children()
    }
    fn mixes_samples(&self) -> bool {
        self.inner.mixes_samples()
    }
    fn structure(&self) -> Structure<'_> {
        if self.opaque {
            Structure::Opaque
        } else {
            self.inner.structure()
        }
    }
}

/// y = W x with no bias, known to the routes only through its structure.
#[derive(Debug)]
struct LinearNoBias {
    inp: usize,
    out: usize,
}

impl LinearNoBias {
    fn w<'a>(&self, theta: &'a [f64]) -> faer::MatRef<'a, f64> {
        faer::MatRef::from_row_major_slice(theta, self.out, self.inp)
    }
}

impl Layer for LinearNoBias {
    fn describe(&self) -> String {
        format!("linear {} → {} without bias", self.inp, self.out)
    }
    fn in_dim(&self) -> usize {
        self.inp
    }
    fn out_dim(&self) -> usize {
        self.out
    }
    fn param_specs(&self) -> Vec<ParamSpec> {
        vec![ParamSpec {
            name: "weight".into(),
            shape: vec![self.out, self.inp],
            role: ParamRole::Weight { fan_in: self.inp },
        }]
    }
    fn forward(&self, theta: &[f64], x: &Batch) -> (Batch, Tape) {
        let mut y = Batch::zeros(self.out, x.n());
        y.mat_mut().copy_from(self.w(theta) * x.mat());
        (y, no_tape())
    }
    fn vjp(&self, theta: &[f64], x: &Batch, _: &Tape, y_bar: &Batch, tb: &mut [f64]) -> Batch {
        let g = y_bar.mat() * x.mat().transpose();
        for o in 0..self.out {
            for i in 0..self.inp {
                tb[o * self.inp + i] += g[(o, i)];
            }
        }
        let mut x_bar = Batch::zeros(self.inp, x.n());
        x_bar
            .mat_mut()
            .copy_from(self.w(theta).transpose() * y_bar.mat());
        x_bar
    }
    fn jvp(&self, theta: &[f64], x: &Batch, _: &Tape, xd: &Batch, td: &[f64]) -> Batch {
        let mut y = Batch::zeros(self.out, x.n());
        y.mat_mut()
            .copy_from(self.w(theta) * xd.mat() + self.w(td) * x.mat());
        y
    }
    fn structure(&self) -> Structure<'_> {
        Structure::Affine(Affine {
            inp: self.inp,
            out: self.out,
            weight: 0,
            bias: None,
        })
    }
}

fn max_abs_diff(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut m: f64 = 0.0;
    for c in 0..a.ncols() {
        for r in 0..a.nrows() {
            m = m.max((a[(r, c)] - b[(r, c)]).abs());
        }
    }
    m
}

/// J Jᵀ by the explicit per-output-vjp Jacobian.
fn reference(model: &Model, theta: &[f64], x: &Batch) -> Mat<f64> {
    let j = ntk::jacobian(model, theta, x);
    &j * j.transpose()
}

/// H against the Jacobian route, relative 1e-12.
fn assert_matches_jacobian(name: &str, h: &Mat<f64>, model: &Model, theta: &[f64], x: &Batch) {
    let want = reference(model, theta, x);
    let scale = max_abs_diff(&want, &Mat::zeros(want.nrows(), want.ncols()));
    assert!(scale > 0.0, "{name}: zero kernel");
    let err = max_abs_diff(h, &want);
    assert!(err <= 1e-12 * scale, "{name}: {err:e} of {scale:e}");
}

/// The matrix-free route of `ntk_spectrum` (a budget just under the dense route's).
fn matrix_free(model: &Model, theta: &[f64], x: &Batch) -> ntk::NtkSummary {
    let opts = NtkOptions {
        memory_budget_bytes: ntk::gram_bytes(model, x.n()) - 1,
        ..Default::default()
    };
    ntk::ntk_spectrum(model, theta, x, &opts).expect("matrix-free spectrum")
}

/// dense → σ → residual[dense → σ] → dense, each layer (and the composites) built by `wrap`.
fn sample_wise(d: usize, w: usize, m: usize, wrap: fn(Box<dyn Layer>) -> Box<dyn Layer>) -> Model {
    let act = Activation::leaky_relu();
    let branch = Serial::new(vec![
        wrap(Box::new(Dense::new(w, w))),
        wrap(Box::new(ActivationLayer::new(act.clone(), w))),
    ]);
    let layers = vec![
        wrap(Box::new(Dense::new(d, w))),
        wrap(Box::new(ActivationLayer::new(act.clone(), w))),
        wrap(Box::new(Residual::new(wrap(Box::new(branch))))),
        wrap(Box::new(Dense::new(w, m))),
    ];
    Model::new(wrap(Box::new(Serial::new(layers))), None, act)
}

fn as_is(l: Box<dyn Layer>) -> Box<dyn Layer> {
    l
}

fn reword_boxed(l: Box<dyn Layer>) -> Box<dyn Layer> {
    Box::new(Reworded {
        inner: l,
        opaque: false,
    })
}

#[test]
fn reworded_layers_keep_the_sample_wise_structured_routes() {
    let data = Dataset::ball(30, 5, 2, 3);
    let plain = sample_wise(5, 12, 2, as_is);
    let model = sample_wise(5, 12, 2, reword_boxed);
    assert!(model.net.describe().starts_with("block of"));
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 7);
    assert_eq!(ntk::gram_route(&model), GramRoute::Structured);
    let (h, route) = ntk::gram(&model, &theta, &data.x);
    assert_eq!(route, GramRoute::Structured);
    assert_matches_jacobian("reworded dnn", &h, &model, &theta, &data.x);
    let (h_plain, _) = ntk::gram(&plain, &theta, &data.x);
    assert_eq!(
        max_abs_diff(&h, &h_plain),
        0.0,
        "same Gram as the plain network"
    );
    let dense = ntk::ntk_spectrum(&model, &theta, &data.x, &NtkOptions::default()).unwrap();
    assert_eq!(dense.route, GramRoute::Structured);

    // The matrix-free route walks the network (Davidson on structured products, not Lanczos on
    // vjp + jvp) and finds what it finds for the plain network.
    assert!(StructuredNtk::new(&model, &theta, &data.x).is_ok());
    let free = matrix_free(&model, &theta, &data.x);
    let free_plain = matrix_free(&plain, &theta, &data.x);
    assert_eq!(free.route, GramRoute::MatrixFree);
    assert!(free.method.starts_with("davidson"), "{}", free.method);
    assert_eq!(free.method, free_plain.method);
    assert_eq!(free.lambda_min, free_plain.lambda_min);
    assert_eq!(free.lambda_max, free_plain.lambda_max);
}

#[test]
fn reworded_layers_keep_the_graph_route() {
    let data = Dataset::ball(14, 3, 2, 11);
    let g = Graph::knn(&data.x, 3).unwrap();
    let a = Arc::new(g.normalized_adjacency());
    let act = Activation::Prelu { init: 0.25 };
    let build = |wrap: fn(Box<dyn Layer>) -> Box<dyn Layer>| {
        let layers = vec![
            wrap(Box::new(Propagate::new(a.clone(), 3))),
            wrap(Box::new(Dense::new(3, 5))),
            wrap(Box::new(ActivationLayer::new(act.clone(), 5))),
            wrap(Box::new(Propagate::new(a.clone(), 5))),
            wrap(Box::new(Dense::new(5, 2))),
        ];
        Model::new(wrap(Box::new(Serial::new(layers))), None, act.clone())
    };
    let (plain, model) = (build(as_is), build(reword_boxed));
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 5);
    assert_eq!(ntk::gram_route(&model), GramRoute::StructuredGraph);
    let h = graph_gram(&model, &theta, &data.x).expect("graph route");
    assert_matches_jacobian("reworded gcn", &h, &model, &theta, &data.x);
    let h_plain = graph_gram(&plain, &theta, &data.x).unwrap();
    assert_eq!(
        max_abs_diff(&h, &h_plain),
        0.0,
        "same Gram as the plain network"
    );
    let s = ntk::ntk_spectrum(&model, &theta, &data.x, &NtkOptions::default()).unwrap();
    assert_eq!(s.route, GramRoute::StructuredGraph);
    assert_eq!(s.route.name(), "structured-graph");
}

#[test]
fn opaque_layers_take_the_generic_routes() {
    let data = Dataset::ball(12, 3, 2, 2);
    let g = Graph::knn(&data.x, 3).unwrap();
    let a = Arc::new(g.normalized_adjacency());
    let act = Activation::leaky_relu();
    // A propagation that does not tell its structure: the graph walker cannot read it.
    let layers = vec![
        hidden(Propagate::new(a, 3)),
        Box::new(Dense::new(3, 4)) as Box<dyn Layer>,
        Box::new(ActivationLayer::new(act.clone(), 4)),
        Box::new(Dense::new(4, 2)),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, act.clone());
    assert_eq!(ntk::gram_route(&model), GramRoute::Jacobian);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 1);
    let (h, route) = ntk::gram(&model, &theta, &data.x);
    assert_eq!(route, GramRoute::Jacobian);
    assert_matches_jacobian("opaque propagation", &h, &model, &theta, &data.x);
    // An opaque dense leaf in a sample-wise network: still walked, through its own vjp/jvp.
    let layers = vec![
        hidden(Dense::new(3, 6)),
        Box::new(ActivationLayer::new(act.clone(), 6)) as Box<dyn Layer>,
        reworded(Dense::new(6, 2)),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 2);
    let (h, route) = ntk::gram(&model, &theta, &data.x);
    assert_eq!(route, GramRoute::Structured);
    assert_matches_jacobian("opaque dense", &h, &model, &theta, &data.x);
    let mut op = StructuredNtk::new(&model, &theta, &data.x).expect("walkable");
    let v = Mat::from_fn(h.nrows(), 2, |i, j| ((i * 7 + j * 3) % 5) as f64 - 2.0);
    let hv = op.apply_block(v.as_ref());
    let want = &h * &v;
    assert!((&hv - &want).norm_l2() <= 1e-12 * want.norm_l2());
}

#[test]
fn an_affine_map_without_bias_takes_every_structured_route() {
    let data = Dataset::ball(16, 3, 2, 4);
    let act = Activation::Sigmoid;
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(LinearNoBias { inp: 3, out: 6 }),
        Box::new(ActivationLayer::new(act.clone(), 6)),
        Box::new(LinearNoBias { inp: 6, out: 2 }),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, act.clone());
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 3);
    let (h, route) = ntk::gram(&model, &theta, &data.x);
    assert_eq!(route, GramRoute::Structured);
    assert_matches_jacobian("no bias, structured", &h, &model, &theta, &data.x);
    let mut op = StructuredNtk::new(&model, &theta, &data.x).expect("walkable");
    let v = Mat::from_fn(h.nrows(), 3, |i, j| ((i * 5 + j * 11) % 7) as f64 - 3.0);
    let hv = op.apply_block(v.as_ref());
    let want = &h * &v;
    assert!((&hv - &want).norm_l2() <= 1e-12 * want.norm_l2());

    let g = Graph::knn(&data.x, 3).unwrap();
    let a = Arc::new(g.normalized_adjacency());
    let layers: Vec<Box<dyn Layer>> = vec![
        Box::new(Propagate::new(a.clone(), 3)),
        Box::new(LinearNoBias { inp: 3, out: 5 }),
        Box::new(ActivationLayer::new(act.clone(), 5)),
        Box::new(Propagate::new(a, 5)),
        Box::new(LinearNoBias { inp: 5, out: 2 }),
    ];
    let model = Model::new(Box::new(Serial::new(layers)), None, act);
    let theta = init_params(&model.param_specs(), &InitScheme::Torch, 6);
    assert_eq!(ntk::gram_route(&model), GramRoute::StructuredGraph);
    let h = graph_gram(&model, &theta, &data.x).expect("graph route");
    assert_matches_jacobian("no bias, graph", &h, &model, &theta, &data.x);
}
