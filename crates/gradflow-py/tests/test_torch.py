"""Model.from_torch against torch.func: the NTK of the imported model equals the empirical NTK
(jacrev, J J^T, float64) of the torch module itself, on every layout the importer reads; and
what it says about modules it cannot read. Model.from_spec against the presets."""

import numpy as np
import pytest

import gradflow
from conftest import relative_error, torch_ntk

torch = pytest.importorskip("torch")
nn = torch.nn


def check(module, x, pair=None):
    """from_torch(module) has torch's parameters and NTK (1e-10 relative) on x."""
    torch.manual_seed(0)
    example = torch.from_numpy(x) if pair is None else pair
    model = gradflow.Model.from_torch(module, example)
    theirs = {k: v.detach().double().numpy() for k, v in module.named_parameters()}
    ours = model.params
    assert ours.keys() == theirs.keys()
    for k in theirs:
        assert np.array_equal(ours[k], theirs[k]), k
    return model


def test_mlp():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 32), nn.LeakyReLU(0.1), nn.Linear(32, 32), nn.Sigmoid(),
                        nn.Linear(32, 32, bias=False), nn.PReLU(), nn.Linear(32, 3))
    x = np.random.default_rng(0).standard_normal((6, 5))
    model = check(net, x)
    assert relative_error(model.ntk(x), torch_ntk(net, x)) < 1e-10


def test_cnn_with_pooling():
    torch.manual_seed(2)
    net = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, stride=2, padding=1, bias=False), nn.LeakyReLU(0.05), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(8, 4))  # 8x8 -> 4x4 -> 2x2 -> 1x1
    x = np.random.default_rng(1).standard_normal((5, 2, 8, 8))
    model = check(net, x)
    assert relative_error(model.ntk(x), torch_ntk(net, x)) < 1e-10


class ResidualMLP(nn.Module):
    """A residual MLP written as a custom forward (not nn.Sequential)."""

    def __init__(self, d=6, w=16, m=2):
        super().__init__()
        self.inp = nn.Linear(d, w)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w))
                                     for _ in range(2)])
        self.out = nn.Linear(w, m)

    def forward(self, x):
        h = torch.relu(self.inp(x))
        for block in self.blocks:
            h = h + block(h)
            h = torch.nn.functional.leaky_relu(h, 0.2)
        return self.out(h)


def test_residual_mlp_with_a_custom_forward():
    torch.manual_seed(3)
    net = ResidualMLP()
    x = np.random.default_rng(2).standard_normal((7, 6))
    model = check(net, x)
    assert relative_error(model.ntk(x), torch_ntk(net, x)) < 1e-10


class DepthwiseSeparable(nn.Module):
    def __init__(self, c=4, out=6, m=3):
        super().__init__()
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.pointwise = nn.Conv2d(c, out, 1)
        self.grouped = nn.Conv2d(out, out, 3, padding=1, groups=2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pool = nn.AvgPool2d(4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(out * 2 * 2, m))

    def forward(self, x):
        h = torch.relu(self.pointwise(torch.relu(self.depthwise(x))))
        h = h + torch.relu(self.grouped(h))
        return self.head(self.pool(self.up(h)))


def test_depthwise_separable_block():
    torch.manual_seed(4)
    net = DepthwiseSeparable()
    x = np.random.default_rng(3).standard_normal((4, 4, 4, 4))
    model = check(net, x)
    assert relative_error(model.ntk(x), torch_ntk(net, x)) < 1e-10


class TwoBranch(nn.Module):
    """torch.cat of two branches of one input (a fan-out), channels then features."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(2, 3, 3, padding=1)
        self.b = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sigmoid())
        self.flat = nn.Flatten()
        self.c = nn.Linear(5 * 4 * 4, 6)
        self.d = nn.Linear(5 * 4 * 4, 2)
        self.out = nn.Linear(8, 2)

    def forward(self, x):
        h = torch.relu(torch.cat([self.a(x), self.b(x)], dim=1))
        h = self.flat(h)
        return self.out(torch.cat([torch.relu(self.c(h)), self.d(h)], dim=1))


def test_concat_branches():
    torch.manual_seed(5)
    net = TwoBranch()
    x = np.random.default_rng(4).standard_normal((5, 2, 4, 4))
    model = check(net, x)
    assert relative_error(model.ntk(x), torch_ntk(net, x)) < 1e-10


class Siamese(nn.Module):
    """One tower called on both inputs (shared parameters), |f(a) - f(b)|, a head."""

    def __init__(self, d=4, w=12, m=2):
        super().__init__()
        self.tower = nn.Sequential(nn.Linear(d, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU())
        self.head = nn.Linear(w, m)

    def forward(self, a, b):
        return self.head(torch.abs(self.tower(a) - self.tower(b)))


class Concatenated(nn.Module):
    """The Siamese module on gradflow's pair layout x = [a; b], for torch's NTK."""

    def __init__(self, inner, d):
        super().__init__()
        self.inner, self.d = inner, d

    def forward(self, x):
        return self.inner(x[:, : self.d], x[:, self.d:])


def test_siamese_shared_tower():
    torch.manual_seed(6)
    net = Siamese()
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    model = check(net, None, pair=(torch.from_numpy(a), torch.from_numpy(b)))
    x = np.concatenate([a, b], axis=1)
    expected = torch_ntk(Concatenated(net, 4), x)
    assert relative_error(model.ntk(x), expected) < 1e-10
    # the tower's parameters appear once (p counts them once)
    assert model.p == sum(p.numel() for p in net.parameters())


def test_unsupported_op_names_the_op_and_the_module_path():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return torch.tanh(self.lin(x))

    net = nn.Sequential(nn.Linear(3, 3), nn.Sequential(Block()), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"unsupported operation `tanh` in module `1.0`"):
        gradflow.Model.from_torch(net, torch.zeros(2, 3))
    net = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    with pytest.raises(ValueError, match=r"unsupported operation BatchNorm1d in module `1`"):
        gradflow.Model.from_torch(net, torch.zeros(2, 3))


def test_a_module_reused_outside_a_pair_is_refused():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(torch.relu(self.lin(x)))

    with pytest.raises(ValueError, match=r"module `lin` is called 2 times"):
        gradflow.Model.from_torch(Tied(), torch.zeros(2, 3))


def test_from_torch_leaves_the_module_as_it_was():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    gradflow.Model.from_torch(net, torch.zeros(2, 3))
    assert all(v.dtype == torch.float32 for v in net.state_dict().values())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training


def test_from_spec_equals_the_preset_bit_for_bit():
    preset = gradflow.Model.preset("dnn", input=5, output=3, hidden=[12, 9], seed=7)
    spec = {"input": 5, "activation": "leaky-relu", "init": "torch", "layers": [
        {"kind": "dense", "out": 12, "name": "0"}, {"kind": "activation"},
        {"kind": "dense", "out": 9, "name": "2"}, {"kind": "activation"},
        {"kind": "dense", "out": 3, "name": "4"}]}
    model = gradflow.Model.from_spec(spec, seed=7)
    assert model.p == preset.p
    a, b = model.params, preset.params
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    x = np.random.default_rng(8).standard_normal((6, 5))
    assert np.array_equal(model.forward(x), preset.forward(x))
    assert np.array_equal(model.ntk(x), preset.ntk(x))


def test_from_spec_errors_name_the_layer_path():
    spec = {"input": [1, 6, 6], "layers": [
        {"kind": "conv2d", "out": 2, "kernel": 3},
        {"kind": "residual", "layers": [{"kind": "conv2d", "out": 3, "kernel": 3, "padding": 1}]},
        {"kind": "flatten"}, {"kind": "dense", "out": 1}]}
    with pytest.raises(gradflow.GradflowError, match=r"layers\[1\]"):
        gradflow.Model.from_spec(spec)
    with pytest.raises(gradflow.GradflowError, match=r"layers\[0\]"):
        gradflow.Model.from_spec({"input": 4, "layers": [{"kind": "dense", "outt": 2}]})
