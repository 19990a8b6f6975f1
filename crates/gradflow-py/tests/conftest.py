"""Shared helpers for the Python tests: torch's empirical NTK (torch.func.jacrev, J J^T in
float64) — the independent route every gradflow NTK is checked against."""

import numpy as np
import pytest


def torch_ntk(module, x):
    """H = J J^T of `module` at its parameters on inputs x (numpy), float64, index i*m + a."""
    torch = pytest.importorskip("torch")
    module = module.double()
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    params = {k: v.detach() for k, v in module.named_parameters()}  # shared tensors once

    def f(p, xs):
        return torch.func.functional_call(module, p, (xs,))

    jac = torch.func.jacrev(f)(params, xt)
    out = f(params, xt)
    rows = out.numel()
    J = torch.cat([j.reshape(rows, -1) for j in jac.values()], dim=1)
    return (J @ J.T).numpy()


def relative_error(a, b):
    """max |a - b| / max |b|."""
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))


@pytest.fixture
def python_sigint():
    """SIGINT handled by Python's default handler (KeyboardInterrupt) during the test: a process
    started in the background by a non-interactive shell inherits SIGINT ignored, and Python then
    leaves it ignored."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
