"""Training from Python: GD against torch's GD from the same start, the flow run against the
command line's, the Run's contents, and Ctrl-C during a run."""

import os
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

import gradflow
from conftest import relative_error

ROOT = Path(__file__).resolve().parents[3]


def small_problem(seed=0):
    model = gradflow.Model.preset("dnn", input=6, output=2, hidden=[24, 24], seed=seed)
    rng = np.random.default_rng(seed + 10)
    return model, rng.standard_normal((15, 6)), rng.standard_normal((15, 2))


def test_gd_matches_torch_gd_from_the_same_start(tmp_path):
    torch = pytest.importorskip("torch")
    model, x, y = small_problem()
    start = model.params
    lr, epochs = 0.05, 120
    run = gradflow.train(model, x, y, solver="gd", lr=lr, epochs=epochs, out=tmp_path / "run")

    net = torch.nn.Sequential(
        torch.nn.Linear(6, 24), torch.nn.LeakyReLU(0.01), torch.nn.Linear(24, 24),
        torch.nn.LeakyReLU(0.01), torch.nn.Linear(24, 2)).double()
    net.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    for _ in range(epochs):
        net.zero_grad()
        loss = ((net(xt) - yt) ** 2).mean()  # mse: L = ||u - y||^2 / (n m)
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    losses.append(((net(xt) - yt) ** 2).mean().item())

    final = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert run.params.keys() == final.keys()
    for name in final:
        assert relative_error(run.params[name], final[name]) < 1e-10, name
    epoch = run.metrics["epoch"].astype(int)
    assert epoch[0] == 0 and epoch[-1] == epochs
    assert relative_error(run.metrics["loss"], np.array(losses)[epoch]) < 1e-10
    # the model itself keeps its parameters; the run starts from them
    for name in start:
        assert np.array_equal(model.params[name], start[name])
        assert np.array_equal(run.params_init[name], start[name])


def test_run_holds_summary_verdict_checkpoints_and_loads_back(tmp_path):
    model, x, y = small_problem(1)
    run = gradflow.train(model, x, y, lr=0.05, epochs=60, ntk_every=20, out=tmp_path / "r")
    assert run.status == "completed"
    assert run.summary["p"] == model.p and run.summary["nm"] == 30
    assert run.verdict["kind"] in ("confirmed", "undecided")
    assert list(run.ntk["epoch"].astype(int)) == [0, 20, 40, 60]
    # the first checkpoint's lambda_min is the model's at its starting parameters
    lam0 = np.linalg.eigvalsh(model.ntk(x))[0]
    assert abs(run.ntk["lambda_min"][0] - lam0) <= 1e-9 * lam0
    again = gradflow.load_run(tmp_path / "r")
    assert again.summary == run.summary
    html = run._repr_html_()
    assert run.verdict["kind"] in html and "<svg" in html


def test_flow_run_matches_the_command_lines(tmp_path):
    binary = os.environ.get("GRADFLOW_BIN") or shutil.which("gradflow") or str(ROOT / "target/release/gradflow")
    if not os.path.isfile(binary):
        pytest.skip("no gradflow binary (cargo build --release, or set GRADFLOW_BIN)")
    model, x, y = small_problem(2)
    run = gradflow.train(model, x, y, solver="flow", t_end=1.5, out=tmp_path / "py")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    (tmp_path / "cli.toml").write_text(
        'seed = 2\n[data]\nkind = "npy"\nx = "x.npy"\ny = "y.npy"\n'
        '[model]\npreset = "dnn"\nhidden = [24, 24]\n'
        '[train]\nsolver = "flow"\nt_end = 1.5\n')
    subprocess.run([binary, "train", str(tmp_path / "cli.toml"), "--out", str(tmp_path / "cli"),
                    "--quiet"], check=True, capture_output=True)
    cli = gradflow.load_run(tmp_path / "cli")
    assert run.summary["flow"]["steps_accepted"] == cli.summary["flow"]["steps_accepted"]
    for name in cli.params:
        assert np.array_equal(run.params[name], cli.params[name]), name
    assert np.array_equal(run.metrics["loss"], cli.metrics["loss"])


def test_train_refuses_targets_of_the_wrong_width(tmp_path):
    model, x, _ = small_problem()
    with pytest.raises(gradflow.GradflowError, match=r"y has 3 columns but the model has 2 outputs"):
        gradflow.train(model, x, np.zeros((15, 3)), epochs=5, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_train_options_are_checked_as_in_a_config_file(tmp_path):
    model, x, y = small_problem()
    with pytest.raises(gradflow.GradflowError, match="train.lr"):
        gradflow.train(model, x, y, lr=-1.0, epochs=5, out=tmp_path / "bad")
    with pytest.raises(gradflow.GradflowError, match="unknown field `rtoll`"):
        gradflow.train(model, x, y, epochs=5, rtoll=1e-3, out=tmp_path / "bad")


def test_ctrl_c_stops_a_training_run_inside_the_call(tmp_path, python_sigint):
    """SIGINT 0.5 s into a run must raise KeyboardInterrupt from inside `train` and leave the run
    directory marked "interrupted" before its last epoch. If the run finished before the signal,
    the call is retried longer; a signal arriving after the call ended fails the test."""
    model = gradflow.Model.preset("dnn", input=20, output=2, hidden=[256, 256], seed=0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((400, 20)), rng.standard_normal((400, 2))
    for epochs in (2_000, 20_000, 200_000):
        out = tmp_path / f"run-{epochs}"
        timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
        timer.start()
        try:
            gradflow.train(model, x, y, lr=0.01, epochs=epochs, ntk=False, out=out)
        except KeyboardInterrupt:
            summary = gradflow.load_run(out).summary
            assert summary["status"] == "interrupted"
            assert summary["last_epoch"] < epochs
            return
        finally:
            timer.cancel()
        timer.join()
    pytest.fail("every run ended before the signal: the test could not interrupt a call")


def test_train_refuses_nan_targets_naming_the_entry(tmp_path):
    model, x, y = small_problem()
    y[4, 1] = np.nan
    with pytest.raises(gradflow.GradflowError, match=r"y\[4, 1\] is nan"):
        gradflow.train(model, x, y, epochs=5, out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_reproduce_with_shards_returns_the_cluster_commands_without_running(tmp_path):
    out = tmp_path / "paper"
    commands = gradflow.reproduce(scale="paper", only=["dnn", "resnet"], out=out, shards=3)
    assert len(commands) == 4 and not out.exists()
    for i, c in enumerate(commands[:3]):
        assert c.startswith("gradflow reproduce --scale paper ")
        assert f"--shard {i}/3" in c and f"--out {out / f'shard-{i}'}" in c and "--only dnn,resnet" in c
        # Paper scale defaults to GD (one flow run there takes weeks).
        assert "--solver gd" in c
    assert commands[3] == "gradflow merge " + " ".join(str(out / f"shard-{i}") for i in range(3)) + f" --out {out}"
    with pytest.raises(ValueError, match="shards = 0"):
        gradflow.reproduce(shards=0)
    # Quick scale defaults to the flow, f32 to GD; an explicit solver wins.
    quick = gradflow.reproduce(only=["dnn"], out=tmp_path / "quick", shards=2)
    assert all("--solver flow" in c for c in quick[:2])
    f32 = gradflow.reproduce(only=["dnn"], precision="f32", out=tmp_path / "f32", shards=2)
    assert all("--solver gd" in c for c in f32[:2])
    gd = gradflow.reproduce(only=["dnn"], solver="gd", out=tmp_path / "gd", shards=2)
    assert all("--solver gd" in c for c in gd[:2])
    assert gradflow.reproduce(only=["dnn"], shards=1)[0].endswith("--out runs/reproduce-quick-flow/shard-0")


def test_a_torch_module_trains_by_gd_as_torch_does_and_by_the_flow(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Linear(5, 16), torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 16, bias=False),
        torch.nn.LeakyReLU(0.1), torch.nn.Linear(16, 2)).double()
    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (12, 5))
    y = rng.normal(size=(12, 2))
    model = gradflow.Model.from_torch(net, torch.from_numpy(x))
    lr, epochs = 0.05, 80
    run = gradflow.train(model, x, y, solver="gd", lr=lr, epochs=epochs, out=tmp_path / "gd")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        net.zero_grad()
        ((net(xt) - yt) ** 2).mean().backward()
        with torch.no_grad():
            for p in net.parameters():
                p -= lr * p.grad
    final = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    assert run.params.keys() == final.keys()
    for name in final:
        assert relative_error(run.params[name], final[name]) < 1e-10, name
    flow = gradflow.train(model, x, y, solver="flow", t_end=1.0, out=tmp_path / "flow")
    assert flow.status == "completed"
    assert flow.metrics["loss"][-1] < flow.metrics["loss"][0]
