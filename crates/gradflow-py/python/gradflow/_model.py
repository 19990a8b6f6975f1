"""`Model`: a network with its current parameters, built from a preset, a layer-list spec or a
torch module, and the NTK computations on it (`ntk`, `spectrum`, `lambda_min`)."""

import json

import numpy as np

from . import _gradflow
from ._arrays import as_float64, as_samples

_VECTOR_PRESETS = ("dnn", "resnet")
_IMAGE_PRESETS = ("cnn", "conv-resnet", "unet", "mobilenet")
_GRAPH_PRESETS = ("gcn", "cheb", "graphconv")


class Model:
    """A network f(theta, x) and its parameters theta.

    Build one with `Model.preset(...)`, `Model.from_spec(...)` or `Model.from_torch(...)`.
    `model.params` is a dict of float64 arrays under torch's names (assign a dict to replace
    them), `model.p` the parameter count.
    """

    def __init__(self, core, input_shape):
        # `core`: the compiled model (gradflow._gradflow.CoreModel) with its parameters.
        self._core = core
        self.input_shape = tuple(input_shape)

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def preset(cls, name, input, output, *, seed=0, activation="leaky-relu", init="torch", **keys):
        """A preset of the command line (`[model] preset = name`) with its keys.

        `input` is d (dnn, resnet; siamese: the length of each element of a pair, so samples
        have 2d features) or (C, H, W) (cnn, conv-resnet, unet, mobilenet); `output` is m (unet:
        the output channels). Other keys are the preset's (`hidden`, `depth`, `channels`,
        `kernel`, `order`, `combine`), checked as in a config file. Parameters are initialised as
        the CLI does for `seed`.
        """
        model = {"preset": name, "activation": activation, "init": init}
        model.update({k: v for k, v in keys.items() if v is not None})
        if name in _GRAPH_PRESETS:
            raise _gradflow.GradflowError(
                f"preset {name!r} needs a graph on the samples ([graph] in a config file), which "
                "the Python API does not take yet: use `gradflow train` with a config file"
            )
        if name in _IMAGE_PRESETS:
            c, h, w = _image_shape(input, name)
            m = output * h * w if name == "unet" else output
            data = {"kind": "images", "n": 1, "channels": c, "height": h, "width": w, "m": m}
            shape = (c, h, w)
        elif name == "siamese":
            d = _positive_int(input, "input")
            data = {"kind": "pairs", "n": 1, "d": d, "m": output}
            shape = (2 * d,)
        else:
            d = _positive_int(input, "input")
            data = {"kind": "ball", "n": 1, "d": d, "m": output}
            shape = (d,)
        config = {"seed": seed, "data": data, "model": model}
        return cls(_gradflow.CoreModel(json.dumps(config), f"Model.preset({name!r})"), shape)

    @classmethod
    def from_spec(cls, spec, *, seed=0):
        """A model from a layer list: {"input": d or [C, H, W], "layers": [{"kind": ...}, ...],
        "activation": ..., "init": ...} — the `[[model.layers]]` of a config file as a dict
        (kinds: dense, conv2d, activation, avgpool2d, maxpool2d, flatten, upsample, residual,
        concat, shared-pair; see the README). Parameters are named after each entry's `name`
        (torch's module path) and initialised by `init` from `seed` as the CLI does."""
        if not isinstance(spec, dict):
            raise TypeError(f"from_spec takes a dict (the layer list's dict form), not {type(spec).__name__}")
        shape = spec.get("input")
        shape = (shape,) if isinstance(shape, int) else tuple(shape or ())
        return cls(_gradflow.CoreModel.from_spec(json.dumps(spec), seed), shape)

    @classmethod
    def from_torch(cls, module, example_input, *, seed=0):
        """Imports a `torch.nn.Module` through torch.fx with its current parameters (see
        `gradflow._torch`)."""
        from ._torch import spec_from_torch

        spec, params = spec_from_torch(module, example_input)
        model = cls.from_spec(spec, seed=seed)
        model.params = params
        return model

    # -- parameters --------------------------------------------------------------------------

    @property
    def p(self):
        """The number of parameters."""
        return self._core.p

    @property
    def output_dim(self):
        """m, the outputs per sample."""
        return self._core.out_dim

    @property
    def params(self):
        """The parameters as {torch name: float64 array of torch's shape} (copies)."""
        theta = self._core.theta_array()
        out, at = {}, 0
        for name, shape in self._core.param_specs():
            size = int(np.prod(shape, dtype=np.int64))
            out[name] = theta[at : at + size].reshape(shape)
            at += size
        return out

    @params.setter
    def params(self, tensors):
        self._core.set_theta(self._flatten(tensors, "model.params"))

    def _flatten(self, tensors, source):
        if not isinstance(tensors, dict):
            theta = as_float64(tensors, source)
            if theta.ndim != 1:
                raise ValueError(
                    f"{source}: pass a dict of named tensors (as model.params gives) or a flat "
                    f"vector of length p = {self.p}, not an array of shape {theta.shape}"
                )
            return theta
        items = []
        for name, value in tensors.items():
            array = as_float64(value, f"{source}[{name!r}]")
            items.append((str(name), list(array.shape), array.reshape(-1)))
        return self._core.flatten_tensors(items, source)

    def _theta(self, params):
        return None if params is None else self._flatten(params, "params")

    # -- the NTK -----------------------------------------------------------------------------

    def forward(self, x, params=None):
        """The outputs u (n x m) on inputs x."""
        return self._core.forward(as_samples(x, "x", self), self._theta(params))

    def ntk(self, x, params=None, *, memory_budget_gb=8.0):
        """The empirical NTK H = J J^T on x: (n*m, n*m) float64, row/column index i*m + a
        (sample i, output a). Refused past `memory_budget_gb` (then use `spectrum`)."""
        return self._core.ntk(as_samples(x, "x", self), self._theta(params), memory_budget_gb)

    def spectrum(self, x, params=None, *, memory_budget_gb=8.0, full=False):
        """lambda_min and lambda_max of H on x with their accuracy, the route taken (dense or
        matrix-free past `memory_budget_gb`), J's numerical rank and, where J fits the budget,
        the certified lower bound `lambda_min_lower` (None when nothing was proven): the
        `ntk_initial` record of a run's summary.json, as a dict. `full=True` adds every
        eigenvalue (dense route only)."""
        text = self._core.spectrum_json(
            as_samples(x, "x", self), self._theta(params), memory_budget_gb, True, full
        )
        return json.loads(text)

    def lambda_min(self, x, params=None, *, memory_budget_gb=8.0):
        """lambda_min(H) on x: dense within `memory_budget_gb`, matrix-free past it (no Jacobian
        analysis; `spectrum` gives the accuracy, rank and certificate)."""
        text = self._core.spectrum_json(
            as_samples(x, "x", self), self._theta(params), memory_budget_gb, False, False
        )
        return json.loads(text)["lambda_min"]

    # -- display -----------------------------------------------------------------------------

    def __repr__(self):
        lines = self._core.summary_lines()
        head = f"gradflow.Model({self._core.preset}, p = {self.p}, input {self.input_shape}, m = {self.output_dim})"
        return "\n".join([head] + ["  " + line for line in lines])


def _positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} = {value!r}: it must be a positive integer (the features per sample)")
    return int(value)


def _image_shape(value, preset):
    if not (isinstance(value, (tuple, list)) and len(value) == 3):
        raise ValueError(
            f"input = {value!r}: preset {preset!r} takes images, input = (channels, height, width)"
        )
    return tuple(_positive_int(v, "input") for v in value)
