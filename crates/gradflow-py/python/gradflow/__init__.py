"""gradflow in Python: the empirical neural tangent kernel H = J J^T of your network, its least
eigenvalue (with J's rank and a certified lower bound), and training runs by gradient descent or
the true gradient flow — all as float64 numpy arrays.

    import gradflow, numpy as np
    model = gradflow.Model.preset("dnn", input=20, output=5, hidden=[48, 48], seed=0)
    x = np.random.default_rng(0).standard_normal((40, 20))
    H = model.ntk(x)                  # (200, 200), index i*m + a
    s = model.spectrum(x)             # lambda_min, lambda_max, accuracy, rank, certificate
    run = gradflow.train(model, x, y, solver="flow", t_end=5.0)

The numerics live in the compiled module `gradflow._gradflow` (Rust, the same code as the
`gradflow` command line); this package wraps it: `Model` (presets, layer specs, torch modules),
`train` / `load_run` / `Run`, `reproduce`.
"""

from ._gradflow import GradflowError
from ._model import Model
from ._run import Run, load_run, reproduce, train

__all__ = ["GradflowError", "Model", "Run", "load_run", "reproduce", "train"]
