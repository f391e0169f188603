"""Our projection kernels as torch `Linear` weights ([out, in]), for the HF layouts."""

from typing import Any

import numpy as np


def in_projection(kernel: Any) -> np.ndarray:
    """A [in, ...] kernel (e.g. [in, heads, head_dim] or [in, out]) as [out, in] float32."""
    kernel = np.asarray(kernel, np.float32)
    return kernel.reshape(kernel.shape[0], -1).T


def out_projection(kernel: Any) -> np.ndarray:
    """A [..., out] kernel (e.g. [heads, head_dim, out]) as [out, in] float32."""
    kernel = np.asarray(kernel, np.float32)
    return kernel.reshape(-1, kernel.shape[-1]).T
