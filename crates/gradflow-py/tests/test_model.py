"""Model from presets: parameters under torch's names, the NTK against torch.func, the spectrum
and the matrix-free lambda_min against a dense eigensolve, and what bad input gets."""

import numpy as np
import pytest

import gradflow
from conftest import relative_error, torch_ntk


def dnn_and_torch(d=6, hidden=(16, 16), m=2, seed=0):
    torch = pytest.importorskip("torch")
    model = gradflow.Model.preset("dnn", input=d, output=m, hidden=list(hidden), seed=seed)
    widths = [d, *hidden, m]
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.LeakyReLU(0.01)]
    net = torch.nn.Sequential(*layers[:-1]).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in model.params.items()})
    return model, net


def test_dnn_preset_names_and_shapes_are_torchs():
    model, net = dnn_and_torch()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert {k: v.shape for k, v in model.params.items()} == shapes
    assert model.p == sum(v.numel() for v in net.parameters())


def test_dnn_preset_ntk_matches_torch_func():
    model, net = dnn_and_torch()
    x = np.random.default_rng(1).standard_normal((7, 6))
    H = model.ntk(x)
    assert H.shape == (14, 14) and H.dtype == np.float64
    assert relative_error(H, torch_ntk(net, x)) < 1e-10


def test_forward_matches_torch():
    torch = pytest.importorskip("torch")
    model, net = dnn_and_torch()
    x = np.random.default_rng(2).standard_normal((5, 6))
    expected = net(torch.from_numpy(x)).detach().numpy()
    assert relative_error(model.forward(x), expected) < 1e-14


def test_setting_params_changes_the_ntk_as_torch_says():
    torch = pytest.importorskip("torch")
    model, net = dnn_and_torch()
    torch.manual_seed(5)
    other = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.LeakyReLU(0.01), torch.nn.Linear(16, 16),
        torch.nn.LeakyReLU(0.01), torch.nn.Linear(16, 2)).double()
    x = np.random.default_rng(3).standard_normal((6, 6))
    before = model.ntk(x)
    model.params = other.state_dict()  # torch tensors are accepted
    after = model.ntk(x)
    assert relative_error(after, before) > 1e-3
    assert relative_error(after, torch_ntk(other, x)) < 1e-10
    # params= computes at other parameters without changing the model's
    assert np.array_equal(model.ntk(x, params=net.state_dict()), before)
    assert np.array_equal(model.ntk(x), after)


def test_params_setter_names_the_missing_or_misshapen_tensor():
    model, _ = dnn_and_torch()
    params = model.params
    del params["2.bias"]
    with pytest.raises(gradflow.GradflowError, match="tensor `2.bias`.*missing"):
        model.params = params
    params = model.params
    params["0.weight"] = params["0.weight"].T
    with pytest.raises(gradflow.GradflowError, match=r"tensor `0.weight` has shape \[6, 16\]"):
        model.params = params


def test_spectrum_agrees_with_a_dense_eigensolve_and_certifies():
    model = gradflow.Model.preset("dnn", input=10, output=2, hidden=[64, 64], seed=3)
    x = np.random.default_rng(4).standard_normal((40, 10))
    eig = np.linalg.eigvalsh(model.ntk(x))
    s = model.spectrum(x)
    assert s["dim"] == 80 and s["p"] == model.p
    assert abs(s["lambda_min"] - eig[0]) <= 1e-9 * eig[-1]
    assert abs(s["lambda_max"] - eig[-1]) <= 1e-9 * eig[-1]
    assert s["jacobian_rank"] == 80
    lower = s["lambda_min_lower"]
    assert lower is not None and 0 < lower <= eig[0]


def test_lambda_min_goes_matrix_free_past_the_budget():
    model = gradflow.Model.preset("dnn", input=10, output=2, hidden=[96, 96], seed=3)
    x = np.random.default_rng(5).standard_normal((150, 10))
    exact = np.linalg.eigvalsh(model.ntk(x))[0]
    budget = 0.008  # GB: the dense route (H and its workspace) does not fit, matrix-free does
    s = model.spectrum(x, memory_budget_gb=budget)
    assert s["route"] == "matrix-free"
    assert abs(model.lambda_min(x, memory_budget_gb=budget) - exact) <= max(
        10 * s["lambda_min_accuracy"], 1e-8 * exact)


def test_wrong_x_shape_names_the_expected_shape():
    model, _ = dnn_and_torch()
    with pytest.raises(gradflow.GradflowError, match=r"x has 5 features per sample but the model takes 6"):
        model.ntk(np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"pass one sample per row, shape \(n, 6\)"):
        model.ntk(np.ones(6))


def test_nan_input_is_refused_naming_the_entry():
    model, _ = dnn_and_torch()
    x = np.ones((4, 6))
    x[2, 3] = np.nan
    with pytest.raises(gradflow.GradflowError, match=r"x\[2, 3\] is NaN"):
        model.spectrum(x)


def test_non_float64_arrays_are_converted_or_refused():
    model, _ = dnn_and_torch()
    x32 = np.random.default_rng(6).standard_normal((4, 6)).astype(np.float32)
    # float32 and integers are converted exactly to float64 ...
    assert np.array_equal(model.ntk(x32), model.ntk(x32.astype(np.float64)))
    xi = np.arange(24).reshape(4, 6) % 5 - 2
    assert np.array_equal(model.ntk(xi), model.ntk(xi.astype(np.float64)))
    # ... a Fortran-ordered or strided float64 view gives the same as its contiguous copy ...
    xf = np.asfortranarray(x32.astype(np.float64))
    assert np.array_equal(model.ntk(xf), model.ntk(np.ascontiguousarray(xf)))
    # ... complex and boolean arrays are refused.
    with pytest.raises(TypeError, match="dtype complex128"):
        model.ntk(x32.astype(np.complex128))
    with pytest.raises(TypeError, match="dtype bool"):
        model.ntk(x32 > 0)


def test_bad_preset_keys_get_the_cli_message():
    with pytest.raises(gradflow.GradflowError, match="unknown field `hiden`"):
        gradflow.Model.preset("dnn", input=4, output=1, hiden=[3])
    with pytest.raises(gradflow.GradflowError, match="model.activation"):
        gradflow.Model.preset("dnn", input=4, output=1, hidden=[3], activation="tanh")


def test_a_panic_becomes_an_exception_not_an_abort():
    with pytest.raises(gradflow.GradflowError, match="internal error.*deliberate test panic"):
        gradflow._gradflow._panic_for_test()
