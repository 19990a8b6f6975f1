"""`Model.from_torch`: a torch.nn.Module read through torch.fx into gradflow's layer-list spec
(the dict form of `[[model.layers]]`) plus its current parameters under torch's names.

The traced graph is a DAG; the spec is a nested list. Every traced value is kept as (where it
starts, the steps applied since): a chain. `a + b` where one chain extends the other is a
residual block x + f(x) (f: the extra steps); `torch.cat` of chains from one start is a fan-out
`concat`; two inputs run through the same modules and joined by `|f(a) - f(b)|` or
`torch.cat([f(a), f(b)], 1)` are a `shared-pair` (a Siamese tower, parameters shared). Anything
else is an error naming the operation and the module path it was called from.

torch is imported here only, when `from_torch` is called.
"""

import copy
import operator


class UnsupportedTorchModule(ValueError):
    """The module uses an operation or layout gradflow's layer list cannot express."""


class _Step:
    """One spec entry in a chain (compared by identity: the same traced operation)."""

    def __init__(self, entry, target=None):
        self.entry, self.target = entry, target


class _Chain:
    def __init__(self, start, steps, shape):
        self.start, self.steps, self.shape = start, tuple(steps), tuple(shape)

    def then(self, entry, shape, target=None):
        return _Chain(self.start, self.steps + (_Step(entry, target),), shape)


class _Difference:
    """a - b of the two inputs' towers, waiting for its abs()."""

    def __init__(self, a, b, node):
        self.a, self.b, self.node = a, b, node


def spec_from_torch(module, example_input):
    """(spec dict, {name: float64 array}) for `module`; `example_input` is one tensor (a batch:
    (N, d) or (N, C, H, W)) or a pair of tensors for a Siamese module taking (a, b)."""
    import torch
    import torch.fx as fx
    from torch.fx.passes.shape_prop import ShapeProp

    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    if len(inputs) not in (1, 2):
        raise UnsupportedTorchModule(
            f"example_input: pass one batch tensor, or two for a Siamese module taking (a, b); got {len(inputs)}"
        )
    module = copy.deepcopy(module).double().eval()  # the caller's module is left as it was
    inputs = tuple(torch.as_tensor(t).double() for t in inputs)
    try:
        gm = fx.symbolic_trace(module)
    except Exception as e:  # control flow on values, unsupported Python, ...
        raise UnsupportedTorchModule(f"torch.fx cannot trace {type(module).__name__}: {e}") from e
    ShapeProp(gm).propagate(*inputs)
    reader = _Reader(gm, torch)
    result = reader.read()
    if len(inputs) == 1:
        shape = tuple(inputs[0].shape[1:])
        spec_input = shape[0] if len(shape) == 1 else list(shape)
    else:
        if result.start != "pair":
            raise UnsupportedTorchModule(
                "a module taking two inputs must run both through one shared tower and join them "
                "with torch.abs(f(a) - f(b)) or torch.cat([f(a), f(b)], dim=1) (a Siamese pair)"
            )
        spec_input = 2 * int(inputs[0].shape[1])
    if len(result.shape) != 1:
        raise UnsupportedTorchModule(
            f"the module's output has per-sample shape {result.shape}: gradflow models end in a vector (N, m); add a Flatten"
        )
    activation = reader.first_activation or "leaky-relu"
    spec = {"input": spec_input, "activation": activation, "init": "torch",
            "layers": [s.entry for s in result.steps]}
    reader.check_sharing()
    params = {name: p.detach().cpu().double().numpy().copy() for name, p in module.named_parameters()}
    return spec, params


class _Reader:
    def __init__(self, gm, torch):
        self.gm, self.torch = gm, torch
        self.values = {}
        self.first_activation = None
        self.calls = {}  # module target -> times called
        self.paired = set()  # targets shared by the two towers of a pair

    # -- the walk ----------------------------------------------------------------------------

    def read(self):
        out = None
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                self.values[node] = _Chain(node.name, (), self.shape(node))
            elif node.op == "call_module":
                self.values[node] = self.call_module(node)
            elif node.op in ("call_function", "call_method"):
                self.values[node] = self.call_function(node)
            elif node.op == "output":
                out = self.arg(node, node.args[0])
            else:  # get_attr: a tensor used as a constant
                raise self.unsupported(node, f"`{node.target}` (a tensor attribute used in forward)")
        if not isinstance(out, _Chain):
            raise UnsupportedTorchModule("the module's output is not a single tensor")
        return out

    def shape(self, node):
        meta = node.meta.get("tensor_meta")
        return tuple(meta.shape[1:]) if meta is not None and hasattr(meta, "shape") else ()

    def arg(self, node, a):
        if a not in self.values:
            raise self.unsupported(node, f"an argument {a!r} that is not a traced tensor")
        return self.values[a]

    def where(self, node):
        if node.op == "call_module":
            return f"module `{node.target}`"
        stack = node.meta.get("nn_module_stack") or {}
        path = next(reversed(stack), None) if stack else None
        return f"module `{path}`" if path else "the top-level forward"

    def unsupported(self, node, what):
        return UnsupportedTorchModule(
            f"unsupported operation {what} in {self.where(node)} (fx node `{node.name}`): gradflow "
            "reads Linear, Conv2d, AvgPool2d, MaxPool2d, Upsample(nearest), Flatten, ReLU, LeakyReLU, "
            "PReLU, Sigmoid, residual +, torch.cat and Siamese pairs"
        )

    def activation(self, value):
        if self.first_activation is None:
            self.first_activation = value
        return value

    # -- modules -----------------------------------------------------------------------------

    def call_module(self, node):
        nn = self.torch.nn
        mod = self.gm.get_submodule(node.target)
        x = self.arg(node, node.args[0])
        if len(node.args) != 1 or node.kwargs:
            raise self.unsupported(node, f"{type(mod).__name__} called with extra arguments")
        self.calls[node.target] = self.calls.get(node.target, 0) + 1
        name, shape = node.target, self.shape(node)
        if isinstance(mod, nn.Identity):
            return x
        if isinstance(mod, nn.Linear):
            if len(x.shape) != 1:
                raise self.unsupported(node, f"Linear on per-sample shape {x.shape} (flatten first)")
            entry = {"kind": "dense", "out": mod.out_features, "bias": mod.bias is not None}
        elif isinstance(mod, nn.Conv2d):
            entry = self.conv(node, mod)
        elif isinstance(mod, (nn.AvgPool2d, nn.MaxPool2d)):
            entry = self.pool(node, mod)
        elif isinstance(mod, nn.Upsample):
            factor = mod.scale_factor
            factor = factor[0] if isinstance(factor, tuple) and len(set(factor)) == 1 else factor
            if mod.mode != "nearest" or mod.size is not None or float(factor) != int(factor):
                raise self.unsupported(node, "Upsample other than nearest with an integer scale_factor")
            entry = {"kind": "upsample", "factor": int(factor)}
        elif isinstance(mod, nn.Flatten):
            if (mod.start_dim, mod.end_dim) != (1, -1):
                raise self.unsupported(node, f"Flatten(start_dim={mod.start_dim}, end_dim={mod.end_dim})")
            return self.flatten(x, shape, name)
        elif isinstance(mod, nn.ReLU):
            entry = {"kind": "activation", "activation": self.activation("relu")}
        elif isinstance(mod, nn.LeakyReLU):
            entry = {"kind": "activation",
                     "activation": self.activation({"kind": "leaky-relu", "slope": float(mod.negative_slope)})}
        elif isinstance(mod, nn.Sigmoid):
            entry = {"kind": "activation", "activation": self.activation("sigmoid")}
        elif isinstance(mod, nn.PReLU):
            if mod.num_parameters != 1:
                raise self.unsupported(node, f"PReLU(num_parameters={mod.num_parameters}) (gradflow's has one slope)")
            entry = {"kind": "activation", "activation": self.activation("prelu")}
        else:
            raise self.unsupported(node, f"{type(mod).__name__}")
        entry["name"] = name
        return x.then(entry, shape, target=node.target)

    def conv(self, node, mod):
        def square(v, what):
            v = tuple(v) if isinstance(v, (tuple, list)) else (v, v)
            if isinstance(v[0], str) or v[0] != v[1]:
                raise self.unsupported(node, f"Conv2d with {what} = {v} (gradflow takes one int for both axes)")
            return int(v[0])

        if mod.padding_mode != "zeros":
            raise self.unsupported(node, f"Conv2d with padding_mode = {mod.padding_mode!r}")
        if square(mod.dilation, "dilation") != 1:
            raise self.unsupported(node, "Conv2d with dilation > 1")
        return {"kind": "conv2d", "out": mod.out_channels, "kernel": square(mod.kernel_size, "kernel_size"),
                "stride": square(mod.stride, "stride"), "padding": square(mod.padding, "padding"),
                "groups": mod.groups, "bias": mod.bias is not None}

    def pool(self, node, mod):
        kind = "avgpool2d" if isinstance(mod, self.torch.nn.AvgPool2d) else "maxpool2d"
        one = lambda v: v if isinstance(v, int) else (v[0] if len(set(v)) == 1 else None)  # noqa: E731
        kernel, stride = one(mod.kernel_size), one(mod.stride if mod.stride is not None else mod.kernel_size)
        padding = one(mod.padding)
        extra = getattr(mod, "dilation", 1)
        if None in (kernel, stride) or padding != 0 or mod.ceil_mode or one(extra) != 1 or \
                getattr(mod, "divisor_override", None) is not None:
            raise self.unsupported(node, f"{type(mod).__name__} with padding, ceil_mode, dilation, "
                                         "divisor_override or non-square windows")
        return {"kind": kind, "kernel": kernel, "stride": stride}

    def flatten(self, x, shape, name=None):
        if len(x.shape) == 1:
            return x  # already a vector
        entry = {"kind": "flatten"}
        if name:
            entry["name"] = name
        return x.then(entry, shape)

    # -- functions and methods ---------------------------------------------------------------

    def call_function(self, node):
        torch, F = self.torch, self.torch.nn.functional
        fn, args, kwargs = node.target, node.args, node.kwargs
        method = node.op == "call_method"
        shape = self.shape(node)

        def is_(*names_or_fns):
            return any((method and fn == f) or (not method and fn is f) for f in names_or_fns)

        if is_(torch.relu, F.relu, "relu"):
            return self.arg(node, args[0]).then({"kind": "activation", "activation": self.activation("relu")}, shape)
        if is_(torch.sigmoid, F.sigmoid, "sigmoid"):
            return self.arg(node, args[0]).then({"kind": "activation", "activation": self.activation("sigmoid")}, shape)
        if is_(F.leaky_relu):
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            act = self.activation({"kind": "leaky-relu", "slope": float(slope)})
            return self.arg(node, args[0]).then({"kind": "activation", "activation": act}, shape)
        if is_(torch.flatten, "flatten"):
            start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
            end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
            if (start, end) != (1, -1):
                raise self.unsupported(node, f"flatten(start_dim={start}, end_dim={end}) (only 1, -1: keep the batch axis)")
            return self.flatten(self.arg(node, args[0]), shape)
        if is_(operator.add, operator.iadd, torch.add, "add", "add_"):
            if kwargs.get("alpha", 1) != 1 or len(args) != 2:
                raise self.unsupported(node, "add with alpha")
            return self.residual(node, self.arg(node, args[0]), self.arg(node, args[1]), shape)
        if is_(operator.sub, torch.sub, "sub"):
            a, b = self.arg(node, args[0]), self.arg(node, args[1])
            if isinstance(a, _Chain) and isinstance(b, _Chain) and a.start != b.start:
                return _Difference(a, b, node)
            raise self.unsupported(node, "`-` (only |f(a) - f(b)| of a Siamese pair)")
        if is_(torch.abs, "abs"):
            d = self.arg(node, args[0])
            if isinstance(d, _Difference):
                return self.pair(node, d.a, d.b, "abs-diff", shape)
            raise self.unsupported(node, "abs (only |f(a) - f(b)| of a Siamese pair)")
        if is_(torch.cat, torch.concat):
            parts = [self.arg(node, a) for a in args[0]]
            dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim not in (1, -1) or (dim == -1 and len(parts[0].shape) != 1):
                raise self.unsupported(node, f"torch.cat(dim={dim}) (features or channels: dim=1)")
            if len(parts) == 2 and parts[0].start != parts[1].start:
                return self.pair(node, parts[0], parts[1], "concat", shape)
            return self.concat(node, parts, shape)
        name = getattr(fn, "__name__", None) or str(fn)
        raise self.unsupported(node, f"`{name}`")

    # -- graph structure ---------------------------------------------------------------------

    def split(self, node, chains):
        """The common prefix of chains from one start, and each one's remainder."""
        if any(not isinstance(c, _Chain) for c in chains) or len({c.start for c in chains}) != 1:
            raise self.unsupported(node, "a join of tensors that do not come from the same input")
        prefix = 0
        while all(len(c.steps) > prefix for c in chains) and \
                all(c.steps[prefix] is chains[0].steps[prefix] for c in chains):
            prefix += 1
        return chains[0].steps[:prefix], [c.steps[prefix:] for c in chains]

    def residual(self, node, a, b, shape):
        prefix, (ra, rb) = self.split(node, [a, b])
        if ra and rb:
            raise self.unsupported(
                node, "`+` of two branches that both transform their input (gradflow's residual is x + f(x))")
        branch = ra or rb
        if not branch:
            raise self.unsupported(node, "x + x")
        entry = {"kind": "residual", "layers": [s.entry for s in branch]}
        return _Chain(a.start, prefix + (_Step(entry),), shape)

    def concat(self, node, parts, shape):
        prefix, rests = self.split(node, parts)
        entry = {"kind": "concat", "branches": [[s.entry for s in r] for r in rests]}
        return _Chain(parts[0].start, prefix + (_Step(entry),), shape)

    def pair(self, node, a, b, combine, shape):
        targets = lambda c: [s.target for s in c.steps]  # noqa: E731
        if a.steps == () or targets(a) != targets(b) or None in targets(a):
            raise self.unsupported(
                node, "a join of the two inputs whose towers are not the same modules called in the same order")
        self.paired.update(targets(a))
        entry = {"kind": "shared-pair", "tower": [s.entry for s in a.steps], "combine": combine}
        return _Chain("pair", (_Step(entry),), shape)

    def check_sharing(self):
        for target, n in self.calls.items():
            if n > 1 and not (n == 2 and target in self.paired):
                raise UnsupportedTorchModule(
                    f"module `{target}` is called {n} times: gradflow shares parameters only between "
                    "the two towers of a Siamese pair (each module once per tower)"
                )
