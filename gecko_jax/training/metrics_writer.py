"""Training metrics to the console (a readable line), TensorBoard and metrics.jsonl."""

import contextlib
import json
import os
import time
from typing import Any, Callable, Iterator, Mapping

import jax
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

from gecko_jax.training import workdir_files

METRICS_FILE = "metrics.jsonl"


class MetricsWriter:
    """Writes scalars on process 0; the other hosts stay quiet.

    TensorBoard event files go to WORKDIR/tensorboard; WORKDIR/metrics.jsonl
    gets one line per `scalars` call, `{"step": N, "<prefix>.<name>": value}`
    (e.g. `train.loss`, `evals.stsb.spearman`), for scripts and sweeps.
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0):
        """Opens the workdir's metric files.

        Args:
          workdir: the run's workdir.
          total_steps: the run's length, for the console lines.
          start_step: the step the run starts after (its checkpoint's; 0 for a
            new run); records metrics.jsonl holds of later steps, written
            before a crash, are dropped, as the run writes them again.
        """
        self._total_steps = total_steps
        self._active = jax.process_index() == 0
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard")) if self._active else None
        self._jsonl_path = os.path.join(workdir, METRICS_FILE)
        if self._active:
            workdir_files.keep_records_through(self._jsonl_path, start_step if start_step else -1)

    def scalars(self, step: int, values: Mapping[str, float], prefix: str = "train") -> None:
        """Writes `values` at `step` under `prefix` to TensorBoard and metrics.jsonl."""
        if not self._active or not values:
            return
        for name, value in values.items():
            self._tb.add_scalar(f"{prefix}/{name}", float(value), step)
        self._tb.flush()
        line = {"step": step, **{f"{prefix}.{k}": _json_number(v) for k, v in values.items()}}
        workdir_files.append_line(self._jsonl_path, json.dumps(line))

    def console(self, step: int, values: Mapping[str, float]) -> None:
        if not self._active:
            return
        parts = [f"step {step}/{self._total_steps}"]
        for name, value in values.items():
            parts.append(f"{name} {_fmt(value)}")
        print(" | ".join(parts), flush=True)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _json_number(value: float) -> float | None:
    # Strict JSON has no NaN or infinity; null says the value was not finite.
    value = float(value)
    return value if np.isfinite(value) else None


def _fmt(value: float) -> str:
    value = float(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.3e}"
    return f"{value:.4g}"


class Throughput:
    """Examples and tokens per second, and model FLOPs utilisation, between two log points.

    `mfu` (FLOPs done / elapsed / `peak_flops`, the peak FLOP/s of the devices
    the steps run on; see `training.mfu`) is reported when both are known,
    under `utilisation_name`: `hfu` (hardware FLOPs utilisation) where the
    count includes work the model does not need, such as recomputed layers.
    Where the steps ran faster than the peak, which happens when a measured
    (CPU) peak was taken under load, `remeasure_peak` is called and the higher
    peak kept; the time it takes is left out of the next interval.
    """

    def __init__(self, peak_flops: float | None = None,
                 remeasure_peak: Callable[[], float] | None = None,
                 utilisation_name: str = "mfu"):
        self._peak_flops = peak_flops
        self._utilisation_name = utilisation_name
        self._remeasure_peak = remeasure_peak
        self._start = time.perf_counter()
        self._examples = 0
        self._tokens = 0
        self._flops = 0.0

    def add(self, examples: int, tokens: float, flops: float | None = None) -> None:
        """Counts finished steps: their examples, tokens and model FLOPs (None = unknown)."""
        self._examples += examples
        self._tokens += tokens
        self._flops += flops or 0.0

    def skip(self, seconds: float) -> None:
        """Leaves `seconds` just spent (compiling) out of the current interval."""
        self._start += seconds

    @contextlib.contextmanager
    def paused(self, pending: Any = None) -> Iterator[None]:
        """Leaves the time spent in the block out of the current interval.

        Args:
          pending: arrays the steps so far produce (the train state). Steps
            run asynchronously, so they are waited for first and stay counted.
        """
        jax.block_until_ready(pending)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.skip(time.perf_counter() - start)

    def rates(self) -> dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self._start, 1e-9)
        rates = {"examples_per_sec": self._examples / elapsed,
                 "tokens_per_sec": self._tokens / elapsed}
        if self._peak_flops and self._flops:
            achieved = self._flops / elapsed
            if achieved > self._peak_flops and self._remeasure_peak is not None:
                self._raise_peak()
                now = time.perf_counter()
            rates[self._utilisation_name] = achieved / self._peak_flops
        self._start, self._examples, self._tokens, self._flops = now, 0, 0, 0.0
        return rates

    def _raise_peak(self) -> None:
        measured = self._remeasure_peak()
        logging.info("the steps ran faster than the peak of %.4g FLOP/s; measured it again: "
                     "%.4g FLOP/s", self._peak_flops, measured)
        if measured > self._peak_flops:
            self._peak_flops = measured
        else:
            logging.warning("MFU above 1: the peak FLOP/s (%.4g) was measured while other "
                            "processes slowed this CPU, and still is", self._peak_flops)


def mean_metrics(history: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Averages per-step metrics fetched from the device since the last log."""
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]}
