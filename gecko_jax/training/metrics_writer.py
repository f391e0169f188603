"""Training metrics to the console (a readable line), TensorBoard and metrics.jsonl."""

import contextlib
import json
import os
import time
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from absl import logging
from tensorboardX import SummaryWriter

from gecko_jax import workdir_files

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
    """Examples and tokens per second, and FLOPs utilisation, between two log points.

    `mfu` is the model FLOPs of the steps (their real tokens; see
    `training.model_flops`) over the elapsed time and `peak_flops`, the peak
    FLOP/s of the devices the steps run on (see `training.mfu`); `hfu` is the
    same for XLA's count of the compiled step, which adds padding, recomputed
    layers and GradCache's second forward pass. Each is reported when its
    count and the peak are known. A CPU peak is measured once, before
    training, so that nothing but steps runs in the timed intervals.
    """

    def __init__(self, peak_flops: float | None = None):
        self._peak_flops = peak_flops
        self._start = time.perf_counter()
        self._examples = 0
        self._tokens = 0
        self._flops = {"mfu": 0.0, "hfu": 0.0}
        self._warned = False

    def add(
        self,
        examples: int,
        tokens: float,
        model_flops: float | None = None,
        hardware_flops: float | None = None,
    ) -> None:
        """Counts finished steps: examples, tokens, model and XLA FLOPs (None = unknown)."""
        self._examples += examples
        self._tokens += tokens
        self._flops["mfu"] += model_flops or 0.0
        self._flops["hfu"] += hardware_flops or 0.0

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
        rates = {"examples_per_sec": self._examples / elapsed, "tokens_per_sec": self._tokens / elapsed}
        for name, flops in self._flops.items():
            if self._peak_flops and flops:
                rates[name] = flops / elapsed / self._peak_flops
        if rates.get("hfu", 0) > 1 and not self._warned:
            self._warned = True
            logging.warning(
                "hfu above 1: the peak FLOP/s (%.4g) was measured while other processes slowed the devices",
                self._peak_flops,
            )
        self._start, self._examples, self._tokens = now, 0, 0
        self._flops = dict.fromkeys(self._flops, 0.0)
        return rates


def mean_metrics(history: list[Mapping[str, np.ndarray]]) -> dict[str, float]:
    """Averages per-step metrics fetched from the device since the last log."""
    return {k: float(np.mean([h[k] for h in history])) for k in history[0]}
