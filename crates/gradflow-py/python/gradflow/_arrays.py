"""Inputs to float64: what gradflow accepts as an array and how it converts it.

Real arrays (float16/32/64, signed or unsigned integers) are converted to float64 — exactly, as
float64 holds every value of those types up to 2**53 — and made C-contiguous (no copy when they
already are both). Booleans, complex numbers, objects and strings are refused with a TypeError.
torch tensors are accepted (detached and moved to the CPU first).
"""

import numpy as np


def as_float64(value, name):
    """`value` as a C-contiguous float64 ndarray, or a TypeError naming `name`."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise TypeError(
            f"{name} has dtype {array.dtype}: gradflow computes in float64 and converts real "
            f"float or integer arrays; pass real numbers (e.g. {name}.astype(np.float64))"
        )
    return np.ascontiguousarray(array, dtype=np.float64)


def as_samples(value, name, model):
    """`value` as an (n, features) float64 matrix for `model`: images may come as (n, C, H, W)."""
    array = as_float64(value, name)
    shape = model.input_shape
    if array.ndim < 2:
        raise ValueError(
            f"{name} has shape {array.shape}: pass one sample per row, shape (n, {_shape_text(shape)})"
        )
    if array.ndim > 2:
        if tuple(array.shape[1:]) != tuple(shape):
            raise ValueError(
                f"{name} has shape {array.shape} but the model takes samples of shape "
                f"{tuple(shape)}: pass {name} with shape (n, {_shape_text(shape)})"
            )
        array = array.reshape(array.shape[0], -1)
    return array


def _shape_text(shape):
    return ", ".join(str(s) for s in shape)
