"""Runs: `train` (one run directory, the same as `gradflow train` writes), `load_run` and `Run`
(metrics, NTK checkpoints, summary, parameters, verdict, and an HTML view for Jupyter), and
`reproduce` (the paper's Section 4)."""

import csv
import html
import json
import os
import tempfile

import numpy as np

from . import _gradflow
from ._arrays import as_float64, as_samples


def train(model, x, y, solver="gd", lr=0.01, epochs=1000, t_end=None, ntk_every=0, out=None, *,
          loss="mse", precision="f64", ntk=True, memory_budget_gb=8.0, force=False,
          progress=False, **train_options):
    """Trains `model` from its current parameters on (x, y) and returns the `Run`.

    solver="gd": full-batch gradient descent, `epochs` steps of size `lr`; solver="flow": the
    kink-aware gradient-flow solve to `t_end` (default lr*epochs). `ntk_every`: epochs between
    NTK checkpoints (0: the start and the end only); `ntk=False` skips them. Other `[train]`
    keys of a config file (rtol, atol, outputs, kink_aware, compare_gd, log_every) pass through.
    The run directory is `out` (default: a new temporary directory, `run.dir`); the model's
    parameters are not changed (the final ones are `run.params`).
    """
    x = as_samples(x, "x", model)
    y = as_float64(y, "y")
    if y.ndim == 1:
        y = y.reshape(-1, 1)
    m = model.output_dim
    if y.ndim != 2:
        raise ValueError(f"y has shape {y.shape}: pass targets with shape (n, {m})")
    if y.shape[1] != m:
        raise _gradflow.GradflowError(
            f"y has {y.shape[1]} columns but the model has {m} outputs: pass y with shape (n, {m})")
    if y.shape[0] != x.shape[0]:
        raise _gradflow.GradflowError(
            f"y has {y.shape[0]} rows but x has {x.shape[0]}: x must be n × d and y n × m for the same n")
    for name, a in (("x", x), ("y", y)):
        bad = np.argwhere(~np.isfinite(a))
        if len(bad):
            i, j = bad[0]
            raise _gradflow.GradflowError(
                f"{name}[{i}, {j}] is {a[i, j]} — the data must be finite: remove or impute that sample")
    table = {"solver": solver, "lr": lr, "epochs": epochs, "loss": loss, "precision": precision}
    if t_end is not None:
        table["t_end"] = t_end
    table.update({k: v for k, v in train_options.items() if v is not None})
    options = {"train": table,
               "ntk": {"every": ntk_every, "enabled": ntk, "memory_budget_gb": memory_budget_gb}}
    if out is None:
        out = os.path.join(tempfile.mkdtemp(prefix="gradflow-run-"), "run")
    out = os.path.abspath(os.fspath(out))
    with tempfile.TemporaryDirectory(prefix="gradflow-data-") as data_dir:
        np.save(os.path.join(data_dir, "x.npy"), x)
        np.save(os.path.join(data_dir, "y.npy"), y)
        _gradflow.train(model._core, json.dumps(options), data_dir, out, force, progress)
    return load_run(out)


def load_run(dir):
    """The run in directory `dir` (what `train` or `gradflow train` wrote)."""
    return Run(dir)


class Run:
    """A finished (or diverged, or interrupted) run: `.summary` (summary.json as a dict),
    `.verdict`, `.metrics` and `.ntk` (metrics.csv and ntk.csv as dicts of float64 arrays),
    `.params` and `.params_init` (dicts of arrays under torch's names), `.dir`."""

    def __init__(self, dir):
        self.dir = os.path.abspath(os.fspath(dir))
        path = os.path.join(self.dir, "summary.json")
        if not os.path.isfile(path):
            raise _gradflow.GradflowError(
                f"{self.dir}: no summary.json: not a gradflow run directory (or a run still going)"
            )
        with open(path, encoding="utf-8") as f:
            self.summary = json.load(f)
        self.metrics = _read_csv(os.path.join(self.dir, "metrics.csv"))
        self.ntk = _read_csv(os.path.join(self.dir, "ntk.csv"))
        self.params = _read_params(os.path.join(self.dir, "params_final.safetensors"))
        self.params_init = _read_params(os.path.join(self.dir, "params_init.safetensors"))

    @property
    def verdict(self):
        """What the run proves: {"kind": "confirmed" | "counterexample" | ..., "line": ...}."""
        return self.summary.get("verdict")

    @property
    def status(self):
        return self.summary.get("status")

    def __repr__(self):
        v = self.verdict or {}
        return f"gradflow.Run({self.dir!r}: {self.status}, {v.get('kind')}: {v.get('line', '')})"

    def _repr_html_(self):
        s, v = self.summary, self.verdict or {}
        rows = [
            ("verdict", f"<b>{html.escape(str(v.get('kind')))}</b> — {html.escape(str(v.get('line', '')))}"),
            ("status", s.get("status")),
            ("p, n·m, p/(n·m)", f"{s.get('p')}, {s.get('nm')}, {s.get('p_over_nm', 0):.3g}"),
            ("loss", f"{s.get('initial_loss', float('nan')):.4e} → {s.get('final_loss', float('nan')):.4e}"),
        ]
        for key, label in (("ntk_initial", "λ_min(H) at the start"), ("ntk_final", "λ_min(H) at the end")):
            if s.get(key):
                n = s[key]
                cert = n.get("lambda_min_lower")
                extra = f" (certified ≥ {cert:.3e})" if isinstance(cert, (int, float)) else ""
                rows.append((label, f"{n['lambda_min']:.4e}{extra}"))
        table = "".join(
            f"<tr><th style='text-align:left'>{html.escape(str(k))}</th><td>{val}</td></tr>" for k, val in rows
        )
        figures = "".join(f"<div>{svg}</div>" for svg in self._figures())
        return f"<div><p>gradflow run <code>{html.escape(self.dir)}</code></p><table>{table}</table>{figures}</div>"

    def _figures(self):
        plots = os.path.join(self.dir, "plots")
        if not os.path.isdir(plots):
            return []
        out = []
        for name in sorted(os.listdir(plots)):
            if name.endswith(".svg"):
                with open(os.path.join(plots, name), encoding="utf-8") as f:
                    out.append(f.read())
        return out


def reproduce(scale="quick", only=None, out=None, shards=None, *, seeds=1, solver=None,
              precision="f64", ntk_every=None, no_ntk=False, threshold_seeds=20, progress=False):
    """The paper's Section 4 (`gradflow reproduce`): writes `out` (default
    runs/reproduce-<scale>, with -flow appended for the flow) with its report and returns
    reproduce.json as a dict.

    `solver` is "flow" (the gradient flow the theorem is about) or "gd" (the paper's GD); left
    out, it is "flow" at quick scale in f64 and "gd" at paper scale, where one flow run takes
    weeks.

    With `shards=N` nothing runs: the N `gradflow reproduce --shard i/N` commands (one per
    cluster job) and the `gradflow merge` command that joins them are returned as a list.
    """
    only = [only] if isinstance(only, str) else list(only or [])
    if solver is None:
        solver = _gradflow.default_solver(scale, precision)
    suffix = "-flow" if solver == "flow" else ""
    out = os.fspath(out) if out is not None else os.path.join("runs", f"reproduce-{scale}{suffix}")
    if shards is not None:
        if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1:
            raise ValueError(f"shards = {shards!r}: it must be a positive integer")
        base = ["gradflow", "reproduce", "--scale", scale, "--seeds", str(seeds), "--solver", solver,
                "--precision", precision, "--threshold-seeds", str(threshold_seeds), "--quiet"]
        if only:
            base += ["--only", ",".join(only)]
        if ntk_every is not None:
            base += ["--ntk-every", str(ntk_every)]
        if no_ntk:
            base.append("--no-ntk")
        parts = [os.path.join(out, f"shard-{i}") for i in range(shards)]
        commands = [base + ["--shard", f"{i}/{shards}", "--out", parts[i]] for i in range(shards)]
        merge = ["gradflow", "merge", *parts, "--out", out]
        return [" ".join(_quote(a) for a in c) for c in commands + [merge]]
    text = _gradflow.reproduce(scale, only, out, seeds, None, solver, precision, ntk_every, no_ntk,
                               threshold_seeds, progress)
    return json.loads(text)


def _quote(arg):
    import shlex

    return shlex.quote(arg)


def _read_csv(path):
    """A CSV of numbers as {column: float64 array}; true/false as 1/0, empty cells as NaN."""
    if not os.path.isfile(path):
        return {}
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return {}
    header, body = rows[0], rows[1:]
    words = {"true": 1.0, "false": 0.0, "": float("nan")}
    columns = {}
    for j, name in enumerate(header):
        values = [row[j].strip() if j < len(row) else "" for row in body]
        columns[name] = np.array([words[v.lower()] if v.lower() in words else float(v) for v in values])
    return columns


def _read_params(path):
    if not os.path.isfile(path):
        return {}
    return {name: data.reshape(shape) for name, shape, data in _gradflow.read_safetensors(path)}
