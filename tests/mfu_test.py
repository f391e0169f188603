"""Model FLOPs utilisation and the step line's rates: FLOP counts, peaks, timing."""

import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.training import metrics_writer
from gecko_jax.training import mfu
from gecko_jax.training import trainer
from gecko_jax.training.metrics_writer import Throughput


def test_flops_of_a_compiled_dot_are_two_m_n_k():
    m, k, n = 64, 48, 32
    compiled = jax.jit(jnp.dot).lower(jnp.ones((m, k)), jnp.ones((k, n))).compile()
    assert mfu.compiled_flops(compiled) == 2 * m * n * k


def _clock(monkeypatch, module, readings):
    """Makes `module`'s `time.perf_counter` return `readings`, one per call."""
    readings = iter(readings)
    monkeypatch.setattr(module, "time", types.SimpleNamespace(perf_counter=lambda: next(readings)))


def test_cpu_peak_is_a_matmuls_flops_over_its_fastest_run(monkeypatch):
    # Timed runs of 0.5 s, 0.25 s and 0.4 s: the fastest, the least slowed
    # by other processes, counts.
    _clock(monkeypatch, mfu, [0.0, 0.5, 1.0, 1.25, 2.0, 2.4])
    assert mfu.measure_cpu_peak_flops(n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.25)


def test_the_measured_cpu_peak_is_a_plausible_rate():
    # A small matmul keeps the test fast; the trainer measures at the default
    # size. Any CPU XLA runs on does better than 10 MFLOP/s, even shared with
    # other processes, and none reaches 100 TFLOP/s in float32.
    assert 1e7 < mfu.measure_cpu_peak_flops(n=256, repeats=2) < 1e14


@pytest.mark.parametrize(
    "kind, peak",
    [
        ("TPU v4", 275e12),
        ("TPU v5 lite", 197e12),
        ("TPU v5", 459e12),
        ("TPU v5p", 459e12),
        ("TPU v6 lite", 918e12),
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("TPU v4 lite", None),
        ("Tesla T4", None),
    ],
)
def test_device_table(kind, peak):
    assert mfu.device_peak_flops(kind) == peak


def test_throughput_reports_mfu_and_hfu_only_with_their_flops_and_a_peak():
    assert "mfu" not in Throughput().rates()
    with_peak = Throughput(peak_flops=1e9)
    with_peak.add(examples=2, tokens=10)
    assert not {"mfu", "hfu"} & set(with_peak.rates())
    with_peak.add(examples=2, tokens=10, model_flops=1e3)
    assert set(with_peak.rates()) == {"examples_per_sec", "tokens_per_sec", "mfu"}
    with_peak.add(examples=2, tokens=10, model_flops=1e3, hardware_flops=3e3)
    rates = with_peak.rates()
    assert rates["hfu"] == pytest.approx(3 * rates["mfu"], rel=1e-6)


def test_mfu_is_the_model_flops_over_the_seconds_and_the_peak(monkeypatch):
    _clock(monkeypatch, metrics_writer, [100.0, 102.0, 104.0, 107.5])
    throughput = Throughput(peak_flops=1e10)
    for _ in range(2):
        throughput.add(examples=8, tokens=400, model_flops=3e9, hardware_flops=5e9)
    assert throughput.rates() == pytest.approx(
        {  # 2 s after the start.
            "examples_per_sec": 8.0,
            "tokens_per_sec": 400.0,
            "mfu": 6e9 / (2 * 1e10),
            "hfu": 10e9 / (2 * 1e10),
        }
    )
    # The next interval starts where that one ended and counts its own steps.
    throughput.add(examples=4, tokens=100, model_flops=1e9)
    assert throughput.rates() == pytest.approx(
        {"examples_per_sec": 2.0, "tokens_per_sec": 50.0, "mfu": 1e9 / (2 * 1e10)}
    )
    # Skipped seconds (a compilation) are left out: 3.5 s less 1.5 s.
    throughput.add(examples=6, tokens=60, model_flops=4e9)
    throughput.skip(1.5)
    assert throughput.rates() == pytest.approx(
        {"examples_per_sec": 3.0, "tokens_per_sec": 30.0, "mfu": 4e9 / (2 * 1e10)}
    )


def test_the_peak_of_accelerators_is_their_table_entry_times_their_count():
    chips = [
        types.SimpleNamespace(platform="tpu", device_kind="TPU v5 lite", process_index=i // 4)
        for i in range(8)
    ]
    assert mfu.peak_flops_per_second(chips) == 8 * 197e12
    gpus = [types.SimpleNamespace(platform="gpu", device_kind="Tesla T4", process_index=0)]
    assert mfu.peak_flops_per_second(gpus) is None


def test_the_cpu_peak_is_measured_once(monkeypatch):
    measured = []

    def measure():
        measured.append(1)
        return 5e9

    monkeypatch.setattr(mfu, "measure_cpu_peak_flops", measure)
    mfu._cpu_peak_flops.cache_clear()  # pylint: disable=protected-access
    try:
        cpus = jax.devices("cpu")
        assert len(cpus) == 8, "conftest should simulate 8 CPU devices"
        # The simulated devices of one process share its cores: one peak, not eight.
        assert mfu.peak_flops_per_second(cpus) == 5e9
        assert mfu.peak_flops_per_second(cpus[:1]) == 5e9
        # Each process measures its own cores: a mesh over two counts two.
        two_processes = [types.SimpleNamespace(platform="cpu", process_index=i // 4) for i in range(8)]
        assert mfu.peak_flops_per_second(two_processes) == 2 * 5e9
        assert len(measured) == 1
    finally:
        # Later callers measure the real CPU, not the stand-in.
        mfu._cpu_peak_flops.cache_clear()  # pylint: disable=protected-access


def test_time_in_a_paused_block_is_left_out():
    throughput = Throughput()
    throughput.add(examples=10, tokens=100)
    time.sleep(0.05)
    with throughput.paused(jnp.ones(3)):
        time.sleep(0.5)
    # 10 examples in about 0.05 s of training, not 0.55 s.
    assert throughput.rates()["examples_per_sec"] > 10 / 0.3


def test_step_line_shows_the_last_learning_rate_and_mean_loss():
    logged = {}

    class Writer:
        def console(self, step, values):
            logged["console"] = (step, dict(values))

        def scalars(self, step, values):
            logged["scalars"] = (step, dict(values))

    history = [
        {
            "loss": np.float32(v),
            "grad_norm": np.float32(1.0),
            "learning_rate": np.float32(v / 10),
            "tokens": np.int32(5),
            "model_flops": np.float32(100),
        }
        for v in (1.0, 2.0, 6.0)
    ]
    trainer._log(3, history, Throughput(), Writer(), batch_size=4, history_flops=[None] * 3)
    step, values = logged["scalars"]
    assert step == 3 and logged["console"] == logged["scalars"]
    assert values["loss"] == pytest.approx(3.0)
    assert values["learning_rate"] == pytest.approx(0.6)


def test_a_looping_program_has_no_flop_count():
    # XLA counts a loop body once, so the count of a scanned step would be
    # several times too low: no HFU rather than a wrong one.
    def scanned(x):
        return jax.lax.scan(lambda h, _: (h @ h, None), x, None, length=4)[0]

    compiled = jax.jit(scanned).lower(jnp.ones((64, 64))).compile()
    assert mfu.has_loop(compiled)
    assert mfu.compiled_flops(compiled) is None
