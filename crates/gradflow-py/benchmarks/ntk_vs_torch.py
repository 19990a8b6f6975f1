"""Times gradflow's NTK (Model.ntk, from Python) against torch.func's empirical NTK on the same
network and inputs, in one process: an MLP d -> [w, w] -> m on n samples with n*m = 2000 (H is
2000 x 2000), float64 both, the torch.func tutorial's route (vmap of per-sample jacrev, then the
contraction J J^T). Prints the times (median of --reps), the ratio and the agreement.

    python crates/gradflow-py/benchmarks/ntk_vs_torch.py [--n 200 --d 50 --width 256 --m 10 --reps 3]
"""

import argparse
import platform
import statistics
import time

import numpy as np
import torch
from torch.func import functional_call, jacrev, vmap

import gradflow


PHASES = {"jacobian": [], "product": []}


def torch_ntk(net, params, x):
    def single(p, xi):
        return functional_call(net, p, (xi.unsqueeze(0),)).squeeze(0)

    t = time.perf_counter()
    jac = vmap(jacrev(single), (None, 0))(params, x)  # {name: (n, m, *shape)}
    n, m = x.shape[0], next(iter(jac.values())).shape[1]
    J = torch.cat([j.reshape(n * m, -1) for j in jac.values()], dim=1)
    PHASES["jacobian"].append(time.perf_counter() - t)
    t = time.perf_counter()
    H = J @ J.T
    PHASES["product"].append(time.perf_counter() - t)
    return H


def torch_matmul_rate():
    """GFLOP/s of one 2048^2 float64 product in torch (its BLAS, this moment's load)."""
    a = torch.randn(2048, 2048, dtype=torch.float64)
    t = time.perf_counter()
    a @ a
    return 2 * 2048**3 / (time.perf_counter() - t) / 1e9


def timed(fn, reps):
    times, out = [], None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--d", type=int, default=50)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--m", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(a.d, a.width), torch.nn.ReLU(),
                              torch.nn.Linear(a.width, a.width), torch.nn.ReLU(),
                              torch.nn.Linear(a.width, a.m)).double()
    x = np.random.default_rng(0).standard_normal((a.n, a.d))
    model = gradflow.Model.preset("dnn", input=a.d, output=a.m, hidden=[a.width, a.width],
                                  activation="relu")
    model.params = net.state_dict()
    params = {k: v.detach() for k, v in net.named_parameters()}
    xt = torch.from_numpy(x)
    nm = a.n * a.m
    print(f"MLP {a.d} -> [{a.width}, {a.width}] -> {a.m}, ReLU, n = {a.n}: H is {nm} x {nm}, p = {model.p}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; numpy {np.__version__}; "
          f"Python {platform.python_version()}")
    g_med, g_min, H = timed(lambda: model.ntk(x), a.reps)
    t_med, t_min, Ht = timed(lambda: torch_ntk(net, params, xt), a.reps)
    Ht = Ht.numpy()
    err = np.max(np.abs(H - Ht)) / np.max(np.abs(Ht))
    print(f"gradflow Model.ntk : median {g_med:.3f} s, min {g_min:.3f} s")
    print(f"torch.func (vmap jacrev, J J^T): median {t_med:.3f} s, min {t_min:.3f} s")
    jac, prod = statistics.median(PHASES["jacobian"]), statistics.median(PHASES["product"])
    print(f"  of which J (vmap jacrev + cat): {jac:.3f} s, J J^T: {prod:.3f} s "
          f"(torch's 2048^2 f64 product now: {torch_matmul_rate():.1f} GFLOP/s)")
    print(f"ratio torch/gradflow (medians): {t_med / g_med:.2f}x; torch's J alone / gradflow: "
          f"{jac / g_med:.2f}x; max|H - H_torch|/max|H_torch| = {err:.2e}")


if __name__ == "__main__":
    main()
