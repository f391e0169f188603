"""FLOPs utilisation: the FLOPs of the steps over what the devices could do.

utilisation = FLOPs per step * steps / seconds / peak FLOP/s. Two counts are
reported: MFU from the model FLOPs of the real tokens (`training.model_flops`)
and HFU from XLA's cost analysis of the compiled step (`compiled_flops`: the
program that really runs, padding and recomputation included). The peak of a
TPU or GPU is its spec sheet's dense bf16 number, the usual denominator
whatever dtype the model computes in. A CPU has no such number, so its peak is
measured once: the best rate of a jitted float32 matmul, which makes a CPU MFU
"the fraction of XLA's own matmul speed on this machine".
"""

import functools
import re
import time
from typing import Iterable

import jax
import numpy as np
from absl import logging

# Dense bf16 FLOP/s of one JAX device, by `device_kind` (full match, first
# pattern wins). TPU v4 and later show one device per chip.
_PEAK_FLOPS = (
    (r"TPU v4", 275e12),
    (r"TPU v5 ?(lite|e)", 197e12),
    (r"TPU v5p?", 459e12),
    (r"TPU v6 ?(lite|e)", 918e12),
    (r"NVIDIA H100 PCIe", 756e12),
    (r"NVIDIA H100 NVL", 835e12),
    (r"NVIDIA H100.*", 989e12),  # SXM, e.g. "NVIDIA H100 80GB HBM3".
    (r"NVIDIA H200.*", 989e12),
    (r"NVIDIA A100.*", 312e12),
)


def device_peak_flops(device_kind: str) -> float | None:
    """The spec-sheet dense bf16 FLOP/s of one device of `device_kind`; None if not listed."""
    for pattern, peak in _PEAK_FLOPS:
        if re.fullmatch(pattern, device_kind):
            return peak
    return None


def measure_cpu_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    """The best FLOP/s of a jitted float32 [n, n] @ [n, n] matmul on this process's CPU.

    XLA spreads one matmul over all cores, so this is the peak of the whole
    process. Load from other processes only ever slows a run down, so the
    fastest of several runs counts; about a second in all at the default size.

    Args:
      n: the matrix size; large enough that the matmul is compute bound.
      repeats: timed runs after one warm-up.
    """
    cpu = jax.devices("cpu")[0]
    # One device, whatever mesh the caller (a training loop) has in force.
    with jax.set_mesh(None):
        a = jax.device_put(np.ones((n, n), np.float32), cpu)
        matmul = jax.jit(lambda x: x @ x)
        matmul(a).block_until_ready()  # Compiles.
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            matmul(a).block_until_ready()
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


@functools.cache
def _cpu_peak_flops() -> float:
    return measure_cpu_peak_flops()


def peak_flops_per_second(devices: Iterable[jax.Device]) -> float | None:
    """The peak FLOP/s of `devices` together (the mesh a step runs on).

    CPU devices of one process (simulated ones included) share its cores, so
    a CPU peak is one measurement per process, whatever the device count.

    Returns:
      The peak, or None (with a logged reason) for a device kind not in the table.
    """
    devices = list(devices)
    if devices[0].platform == "cpu":
        return _cpu_peak_flops() * _num_processes(devices)
    kind = devices[0].device_kind
    peak = device_peak_flops(kind)
    if peak is None:
        logging.warning(
            "no MFU: the peak FLOP/s of device kind %r is unknown; add it to gecko_jax/training/mfu.py", kind
        )
        return None
    return peak * len(devices)


def _num_processes(devices: list[jax.Device]) -> int:
    return len({d.process_index for d in devices})


def has_loop(compiled: jax.stages.Compiled) -> bool:
    """Whether `compiled` has a while loop, whose body XLA's FLOP count covers once."""
    return re.search(r"\bwhile\(", compiled.as_text()) is not None


def compiled_flops(compiled: jax.stages.Compiled) -> float | None:
    """XLA's FLOP count of one call of `compiled`, per device, for HFU.

    For a train step it counts the whole step: forward, backward, any
    recomputation and the optimizer update.

    Returns:
      The FLOPs, or None when the cost analysis has none, or when the program
      loops (scanned layers, GradCache's chunks): XLA counts a loop body once,
      not once per iteration. The reason is logged once per process, not for
      every batch shape compiled.
    """
    cost = compiled.cost_analysis()
    # A dict in recent JAX; a list with one dict per program in older ones.
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops", 0.0)
    if flops <= 0:
        logging.log_first_n(
            logging.WARNING, "no HFU: XLA's cost analysis of the train step has no FLOP count", 1
        )
        return None
    if has_loop(compiled):
        logging.log_first_n(
            logging.WARNING,
            "no HFU: the train step loops (scanned layers or GradCache's chunks) "
            "and XLA counts a loop body once; MFU is unaffected",
            1,
        )
        return None
    return float(flops)
