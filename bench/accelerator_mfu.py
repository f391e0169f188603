r"""bf16 step time, MFU and HFU of the Gemma recipes on one GPU or TPU: XLA vs a fused kernel.

For gecko_270m and gecko_768 the script builds the very train step
`launch/train.py` runs (Gecko loss, AdamW, the recipe's remat), in bfloat16 on
one device, once with each attention implementation: 'xla' (the towers'
einsums, the baseline) and the platform's fused kernel ('splash' on a TPU,
'cudnn' on an NVIDIA GPU; `gecko_jax/models/attention.py`). Each step is
compiled first (compiling is not timed), run `--warmup` times, then timed over
`--steps` steps. Batches are random token ids with every text at its full
length (no padding), so tokens/s counts real tokens. It prints one table:

  step s     mean seconds per step
  tokens/s   query, positive and negative tokens per second
  MFU        model FLOPs of those tokens (`training/model_flops.py`, 6 per
             weight per token plus attention's scores and values) per second
             over the device's spec-sheet dense bf16 peak (`training/mfu.py`)
  HFU        XLA's FLOP count of the compiled step per second over the same
             peak; XLA counts nothing inside a custom call, so for a fused row
             it leaves out the attention the kernel does (a lower bound). The
             layers run unrolled here, as XLA counts a loop body once
  vs xla     the row's speed over the xla row of the same model, same run

The recipes are shrunk to fit one device, and the table says how: the batch
is `--batch_size` (the recipes train 8 and 1024), and gecko_768 keeps as many
of its 26 layers, in whole groups of 5 local + 1 global, as leave half the
device's memory for activations at 16 bytes per parameter (weights,
gradients, two Adam moments, all float32).

    python bench/accelerator_mfu.py [--steps=10] [--warmup=2] [--batch_size=64]
    python bench/accelerator_mfu.py --tiny    # CPU, tiny shapes; ~2 min, nearly all compiling

`--tiny` runs the same path on a CPU with tiny towers and Splash in Pallas
interpret mode (its times say nothing about a TPU); CI runs it.
"""

import dataclasses
import importlib.util
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax.models import attention  # pylint: disable=g-import-not-at-top
from gecko_jax.models.registry import build_tower  # pylint: disable=g-import-not-at-top
from gecko_jax.training import aot  # pylint: disable=g-import-not-at-top
from gecko_jax.training import mfu  # pylint: disable=g-import-not-at-top
from gecko_jax.training import sharding  # pylint: disable=g-import-not-at-top
from gecko_jax.training.train_program import build_train_program  # pylint: disable=g-import-not-at-top
from gecko_jax.training.train_step import param_shapes  # pylint: disable=g-import-not-at-top

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps per row.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps per row after compiling.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch (triplets per step).")
_TINY = flags.DEFINE_bool("tiny", False, "Tiny towers on a CPU, Splash in interpret mode.")

MODELS = ("gecko_270m", "gecko_768")
_TINY_VOCAB = 512
# Weights, gradients and two Adam moments, all float32.
_STATE_BYTES_PER_PARAM = 16


@dataclasses.dataclass(frozen=True)
class Row:
    """One timed train step; the rates are None where they cannot be computed."""

    model: str
    attention: str
    layers: int
    batch: int
    step_seconds: float | None
    tokens_per_second: float | None
    mfu: float | None
    hfu: float | None
    error: str | None = None


def _recipe(name: str):
    path = os.path.join(_REPO, "configs", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _config(name: str, impl: str, batch_size: int, layers: int, tiny: bool):
    """The recipe in bfloat16 on one device, with `layers` layers and attention `impl`."""
    config = _recipe(name)
    config.batch_size = batch_size
    config.mesh_shape.update(data=1, fsdp=1, tensor=1)
    # One device holds the whole of this small batch: the plain step, no GradCache chunks.
    config.grad_cache.chunk_size = 0
    # Unrolled layers, so that XLA's FLOP count (HFU) covers each of them; a loop body
    # is counted once.
    config.model.scan_layers = False
    config.model.update(dtype="bfloat16", attention_impl=impl, num_layers=layers)
    if tiny:
        # gecko_768's tiny shape has local layers with a window (16) shorter than
        # its texts; gecko_270m's keeps its 512-token window, so all its layers
        # see the whole text.
        window = 16 if name == "gecko_768" else config.model.sliding_window
        config.model.update(
            vocab_size=_TINY_VOCAB,
            hidden_size=64,
            num_heads=4,
            num_kv_heads=1,
            head_dim=16,
            intermediate_size=128,
            query_pre_attn_scalar=16.0,
            sliding_window=window,
            projection_dim=min(config.model.projection_dim, 32),
        )
        config.data.update(max_length=32, query_max_length=24)
        width = config.model.projection_dim or config.model.hidden_size
        config.loss.mrl_dims = (width, width // 2)
    return config


def _layers_that_fit(name: str, impl: str, batch_size: int, memory_bytes: int | None) -> int:
    """All of the recipe's layers, or for gecko_768 the most whole local/global groups that fit."""
    full = _recipe(name).model.num_layers
    if name != "gecko_768" or memory_bytes is None:
        return full
    group = _recipe(name).model.sliding_window_pattern
    for layers in range(full, 0, -1):
        if layers % group and layers != full:
            continue
        shapes = param_shapes(build_tower(_config(name, impl, batch_size, layers, False).model), 8)
        params = sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))
        if params * _STATE_BYTES_PER_PARAM <= memory_bytes / 2:
            return layers
    return group


def _batch(config, batch_sharding) -> dict:
    """Random full-length texts with a hard negative each, as the input pipeline lays them out."""
    rng = np.random.default_rng(0)
    batch = {}
    for name, shape in aot.abstract_batch(config, batch_sharding).items():
        if name.endswith("_ids"):
            values = rng.integers(1, config.model.vocab_size, size=shape.shape)
        elif name.endswith("_mask") or name == "has_negative":
            values = np.ones(shape.shape)
        else:  # Example identities: all different, so no in-batch entry is dropped.
            values = np.arange(math.prod(shape.shape)).reshape(shape.shape)
        batch[name] = jax.device_put(values.astype(shape.dtype), batch_sharding)
    return batch


def measure(name: str, config, device, peak: float | None, steps: int, warmup: int) -> Row:
    """Compiles, warms up and times the train step of `config` on `device`."""
    mesh = sharding.create_mesh(dict(config.mesh_shape), devices=[device])
    program = build_train_program(config, mesh)
    rng = jax.random.key(config.seed)
    with sharding.activated(mesh, program.rules):
        state = program.init_fn(rng)
        batch = _batch(config, program.batch_sharding)
        compiled = program.train_step.lower(state, batch, rng).compile()
        hardware_flops = mfu.compiled_flops(compiled)
        for _ in range(warmup):
            state, metrics = compiled(state, batch, rng)
        jax.block_until_ready(state)
        start = time.perf_counter()
        for _ in range(steps):
            state, metrics = compiled(state, batch, rng)
        jax.block_until_ready((state, metrics))
        seconds = (time.perf_counter() - start) / steps
    metrics = jax.device_get(metrics)

    def utilisation(flops):
        return None if flops is None or not peak else flops / seconds / peak

    return Row(
        name,
        config.model.attention_impl,
        config.model.num_layers,
        config.batch_size,
        seconds,
        float(metrics["tokens"]) / seconds,
        utilisation(float(metrics["model_flops"])),
        utilisation(hardware_flops),
    )


def _cell(value: float | None, fmt: str, suffix: str = "") -> str:
    return "n/a" if value is None else format(value, fmt) + suffix


def _rate(flops_per_second: float | None) -> str:
    if flops_per_second is None:
        return "n/a"
    if flops_per_second >= 1e12:
        return f"{flops_per_second / 1e12:.1f} TFLOP/s"
    return f"{flops_per_second / 1e9:.1f} GFLOP/s"


def format_table(rows: list[Row]) -> str:
    """The Markdown table the script prints, one row per (model, attention)."""
    baseline = {r.model: r.step_seconds for r in rows if r.attention == "xla" and not r.error}
    lines = [
        "| model | attention | layers | batch | step s | tokens/s | MFU | HFU | vs xla |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error:
            lines.append(
                f"| {r.model} | {r.attention} | {r.layers} | {r.batch} | failed: {r.error} | | | | |"
            )
            continue
        ratio = baseline[r.model] / r.step_seconds if baseline.get(r.model) else None
        lines.append(
            f"| {r.model} | {r.attention} | {r.layers} | {r.batch} | "
            f"{r.step_seconds:.4f} | {r.tokens_per_second:,.0f} | "
            f"{_cell(r.mfu and 100 * r.mfu, '.1f', '%')} | "
            f"{_cell(r.hfu and 100 * r.hfu, '.1f', '%')} | {_cell(ratio, '.2f', 'x')} |"
        )
    return "\n".join(lines)


def _fused_kernel(platform: str, tiny: bool) -> str:
    if tiny or platform == "tpu":
        return "splash"
    if platform == "gpu":
        return "cudnn"
    raise app.UsageError(
        f"no fused attention kernel runs on {platform}; run this on a GPU or TPU, or with --tiny on a CPU"
    )


def main(argv):
    del argv
    if _STEPS.value < 1 or _WARMUP.value < 0 or _BATCH.value < 1:
        raise app.UsageError("--steps and --batch_size must be at least 1, --warmup at least 0")
    device = jax.devices()[0]
    tiny = _TINY.value
    fused = _fused_kernel(device.platform, tiny)
    if tiny:
        steps, warmup, batch_size = min(_STEPS.value, 2), min(_WARMUP.value, 1), 4
        peak = mfu.measure_cpu_peak_flops(n=512, repeats=3)
        peak_source = "this CPU's measured float32 matmul rate"
    else:
        steps, warmup, batch_size = _STEPS.value, _WARMUP.value, _BATCH.value
        peak = mfu.device_peak_flops(device.device_kind)
        peak_source = "the spec sheet's dense bf16 rate" if peak else "unknown: add it to mfu.py"
    memory = (device.memory_stats() or {}).get("bytes_limit") if not tiny else None
    print(f"device: {device.device_kind} ({device.platform}); peak {_rate(peak)} ({peak_source})")
    print(
        f"{steps} timed steps per row after {warmup} untimed; batch {batch_size} triplets "
        f"(the recipes train 8 and 1024), bfloat16, every text full length"
        + (
            "; tiny towers (width 64, 512-token vocabulary, texts of 24 and 32 tokens), "
            "Splash in Pallas interpret mode: CPU times say nothing about a TPU"
            if tiny
            else ""
        ),
        flush=True,
    )
    rows = []
    for name in MODELS:
        layers = 2 if tiny else _layers_that_fit(name, fused, batch_size, memory)
        if not tiny and layers < _recipe(name).model.num_layers:
            print(
                f"{name}: {layers} of its {_recipe(name).model.num_layers} layers, to fit "
                f"{memory / 2**30:.1f} GiB",
                flush=True,
            )
        for impl in ("xla", fused):
            config = _config(name, impl, batch_size, layers, tiny)
            try:
                if tiny:
                    with attention.emulate_fused_kernels():
                        row = measure(name, config, device, peak, steps, warmup)
                else:
                    row = measure(name, config, device, peak, steps, warmup)
            except Exception as err:  # pylint: disable=broad-except
                # One row's failure (a kernel refusing a shape, memory) is reported in
                # its row; the other rows still run.
                message = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                row = Row(
                    name,
                    impl,
                    layers,
                    batch_size,
                    None,
                    None,
                    None,
                    None,
                    error=f"{type(err).__name__}: {message[:200]}",
                )
            rows.append(row)
            print(f"{name} {impl}: done", flush=True)
    print(format_table(rows))
    print(
        f"HFU of the {fused} rows leaves out the attention inside the kernel: XLA counts no "
        "FLOPs inside a custom call"
    )
    if any(r.error for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
