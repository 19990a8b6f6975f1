#!/usr/bin/env python3
"""Re-checks a gradflow witness without gradflow: the rank of J = du/dtheta.

Rebuilds the network described in claim.json in PyTorch (float64), loads theta from
params.safetensors (parsed by hand: no safetensors package needed), checks the outputs against
u.npy, computes J by autograd, prints its singular values and numerical rank (the rule in
claim.json) and exits 0 exactly when that rank is the claimed one. Needs numpy and torch only.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
U_REL_TOL = 1e-9  # |u_torch - u_given| / max|u_given| allowed


def load_safetensors(path):
    """[(name, float64 tensor)] in data order: 8-byte LE header length, JSON header, LE data."""
    raw = Path(path).read_bytes()
    (hlen,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + hlen])
    header.pop("__metadata__", None)
    base, dtypes, out = 8 + hlen, {"F64": "<f8", "F32": "<f4"}, []
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        if info["dtype"] not in dtypes:
            raise ValueError(f"tensor {name}: dtype {info['dtype']} is not F64/F32")
        lo, hi = info["data_offsets"]
        arr = np.frombuffer(raw[base + lo:base + hi], dtype=dtypes[info["dtype"]])
        out.append((name, torch.from_numpy(arr.astype(np.float64).reshape(info["shape"]))))
    return out


class Sigma(torch.nn.Module):
    """gradflow's activation: z for z > 0, slope*z otherwise (derivative at 0: slope)."""

    def __init__(self, slope):
        super().__init__()
        self.slope = slope

    def forward(self, z):
        return torch.where(z > 0, z, self.slope * z)


class Residual(torch.nn.Module):
    """h + fn(h); the branch's tensors are named fn.*"""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, h):
        return h + self.fn(h)


class Propagate(torch.nn.Module):
    """Graph propagation across samples (rows): A_hat @ H. No parameters."""

    def __init__(self, a_hat):
        super().__init__()
        self.register_buffer("a_hat", a_hat, persistent=False)

    def forward(self, h):
        return self.a_hat @ h


def build(model, a_hat):
    """The network of claim.json's model, as nn.Sequential with gradflow's tensor names."""
    act = model["activation"]
    slope = {"leaky-relu": lambda: float(act["slope"]), "relu": lambda: 0.0}[act["kind"]]()
    d, m, preset = model["d"], model["m"], model["preset"]

    def linear(i, o):
        return torch.nn.Linear(i, o, dtype=torch.float64)

    layers, prev = [], d
    if preset == "dnn":
        for w in model["hidden"]:
            layers += [linear(prev, w), Sigma(slope)]
            prev = w
        layers.append(linear(prev, m))
    elif preset == "resnet":
        layers = [Residual(torch.nn.Sequential(linear(d, d), Sigma(slope)))
                  for _ in range(model["depth"])]
        layers.append(linear(d, m))
    elif preset == "gcn":
        for w in model["hidden"]:
            layers += [Propagate(a_hat), linear(prev, w), Sigma(slope)]
            prev = w
        layers += [Propagate(a_hat), linear(prev, m)]
    else:
        raise ValueError(f"unknown preset {preset}")
    return torch.nn.Sequential(*layers)


def jacobian(net, params, names, x):
    """J (nm x p, row i*m + a, columns in theta's order) by reverse-mode autograd."""
    def u_of(prm):
        return torch.func.functional_call(net, prm, (x,)).reshape(-1)
    try:
        jac = torch.func.jacrev(u_of)(params)
        nm = next(iter(jac.values())).shape[0]
        return torch.cat([jac[k].reshape(nm, -1) for k in names], dim=1)
    except (AttributeError, RuntimeError):  # old torch without torch.func: one grad per row
        leaves = [params[k].clone().requires_grad_(True) for k in names]
        u = u_of(dict(zip(names, leaves)))
        rows = [torch.cat([g.reshape(-1) for g in
                           torch.autograd.grad(u[r], leaves, retain_graph=True, allow_unused=False)])
                for r in range(u.numel())]
        return torch.stack(rows)


def largest_gap_rank(s, min_gap, tail_multiple):
    """(rank, gap, exact) by claim.json's rank_rule (gap None at full rank, inf for an exact 0)."""
    s = sorted((float(v) for v in s), reverse=True)
    full = len(s)
    if full == 0 or s[0] <= 0:
        return 0, (float("inf") if full else None), full > 0
    tol = tail_multiple * np.finfo(np.float64).eps * s[0]
    best = None
    for r in range(1, full):
        hi, lo = s[r - 1], s[r]
        if hi <= tol:
            break
        ratio = float("inf") if lo == 0 else hi / lo
        if best is None or ratio > best[1]:
            best = (r, ratio)
    if best is not None and best[1] >= min_gap and s[best[0]] <= tol:
        return best[0], best[1], True
    rank = sum(1 for v in s if v > tol)
    return rank, (best[1] if best is not None and rank < full else None), False


def summary(s, rank):
    k, show = len(s), set(range(min(5, len(s)))) | set(range(max(0, len(s) - 3), len(s)))
    show |= {r for r in (rank - 2, rank - 1, rank, rank + 1) if 0 <= r < k}
    out, last = [], -1
    for i in sorted(show):
        if i > last + 1:
            out.append("...")
        out.append(f"s_{i + 1} = {s[i]:.6e}")
        last = i
    return ", ".join(out)


def main():
    claim = json.loads((HERE / "claim.json").read_text(encoding="utf-8"))
    model = claim["model"]
    x = torch.from_numpy(np.load(HERE / "x.npy").astype(np.float64))
    u_given = np.load(HERE / "u.npy").astype(np.float64)
    a_hat = None
    if model["preset"] == "gcn":
        a_hat = torch.from_numpy(np.load(HERE / model["graph_adjacency"]).astype(np.float64))
    net = build(model, a_hat)
    tensors = load_safetensors(HERE / "params.safetensors")
    net.load_state_dict(dict(tensors), strict=True)
    names = [k for k, _ in tensors]
    params = {k: t for k, t in tensors}
    p = sum(t.numel() for t in params.values())
    problems = []

    with torch.no_grad():
        u = net(x)
    n, m = u.shape
    nm = n * m
    print(f"model: {model['preset']}, n = {n}, d = {model['d']}, m = {m}, "
          f"activation = {model['activation']}; nm = {nm}, p = {p}")
    if not torch.isfinite(u).all():
        problems.append("the outputs are not all finite")
    if (nm, p) != (claim["nm"], claim["p"]):
        problems.append(f"nm, p = {nm}, {p} here but claim.json says {claim['nm']}, {claim['p']}")
    if u_given.shape != tuple(u.shape):
        problems.append(f"u.npy has shape {u_given.shape}, the network gives {tuple(u.shape)}")
    else:
        diff = float(np.max(np.abs(u.numpy() - u_given)))
        rel = diff / max(float(np.max(np.abs(u_given))), np.finfo(np.float64).tiny)
        print(f"max |u_torch - u_given| = {diff:.3e} (relative {rel:.3e}, allowed {U_REL_TOL:.0e})")
        if not rel <= U_REL_TOL:
            problems.append(f"the outputs differ from u.npy (relative {rel:.3e} > {U_REL_TOL:.0e})")

    J = jacobian(net, params, names, x)
    if not torch.isfinite(J).all():
        problems.append("J is not all finite")
    s = torch.linalg.svdvals(J).numpy()
    rule = claim["rank_rule"]
    rank, gap, exact = largest_gap_rank(s, rule["min_gap"], rule["tail_eps_multiple"])
    print(f"J: {J.shape[0]} x {J.shape[1]}, {len(s)} singular values (descending): {summary(s, rank)}")
    claimed_s = np.array(claim["singular_values"], dtype=np.float64)
    if claimed_s.shape == s.shape and s[0] > 0:
        print(f"max |s_torch - s_claimed| / s_1 = {np.max(np.abs(s - claimed_s)) / s[0]:.3e}")
    if gap is None:
        gap_text = "no gap: full rank"
    else:
        kind = "a cliff to rounding level" if exact else "no cliff: rank = count above tolerance"
        gap_text = f"gap s_{rank}/s_{rank + 1} = {gap:.3e}, {kind}"
    print(f"numerical rank of J: {rank} ({gap_text}); claim.json: {claim['rank']}")
    if rank != claim["rank"]:
        problems.append(f"rank J = {rank} here but claim.json says {claim['rank']}")

    if problems:
        print("NOT CONFIRMED: " + "; ".join(problems))
        return 1
    if rank < nm and p >= nm and exact:
        print(f"rank J = {rank} < nm = {nm} although p = {p} >= nm: H = J J^T is singular "
              f"— a counterexample to Lemma 3.2")
    elif rank < nm and p >= nm:
        print(f"rank J = {rank} < nm = {nm} although p = {p} >= nm, but without a clear cliff: "
              f"H = J J^T is singular to working precision, not shown exactly singular")
    elif rank < nm:
        print(f"rank J = {rank} < nm = {nm} with p = {p} < nm: H = J J^T is singular, "
              f"as it must be (no counterexample: Lemma 3.2 needs p >= nm)")
    else:
        print(f"rank J = nm = {nm} (p = {p}): H = J J^T is positive definite here (no counterexample)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # any failure to re-check is a failure of the witness
        print(f"NOT CONFIRMED: {type(e).__name__}: {e}")
        sys.exit(1)
