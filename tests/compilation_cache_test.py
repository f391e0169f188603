"""The launch scripts keep compiled programs on disk and load them on the next run."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

# Each test runs launch/evaluate.py two or three times: end-to-end runs.
pytestmark = pytest.mark.slow

REPO = pathlib.Path(__file__).resolve().parents[1]
_HIT = "Persistent compilation cache hit"


def _evaluate(data: pathlib.Path, cache_home: pathlib.Path, **env_overrides: str):
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        XDG_CACHE_HOME=str(cache_home),
        # Every program is cached, however fast it compiled, and each
        # load is logged, so the test sees the encoder's programs.
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_LOGGING_LEVEL="DEBUG",
        **env_overrides,
    )
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "launch" / "evaluate.py"),
            "--model=minilm",
            "--task=sts",
            f"--data={data}",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout), result.stderr


def _sts_sample(shared_data: pathlib.Path, tmp_path: pathlib.Path) -> pathlib.Path:
    lines = (shared_data / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "sts-dev-40.csv"
    data.write_text("".join(lines[:40]), encoding="utf-8")
    return data


def test_second_run_loads_its_programs_and_gives_the_same_metrics(shared_data, tmp_path):
    data = _sts_sample(shared_data, tmp_path)
    first, first_log = _evaluate(data, tmp_path / "cache")
    cache = tmp_path / "cache" / "gecko_jax" / "jax"
    entries = sorted(p.name for p in cache.iterdir())
    assert entries, "the first run wrote nothing to the cache"
    assert _HIT not in first_log

    second, second_log = _evaluate(data, tmp_path / "cache")
    assert second == first
    assert second_log.count(_HIT) >= len([e for e in entries if e.startswith("jit_")])
    assert "took at least" not in second_log  # No program was compiled again.


def test_jax_variables_move_or_disable_the_cache(shared_data, tmp_path):
    data = _sts_sample(shared_data, tmp_path)
    _evaluate(data, tmp_path / "home", JAX_COMPILATION_CACHE_DIR=str(tmp_path / "elsewhere"))
    assert any((tmp_path / "elsewhere").iterdir())
    assert not (tmp_path / "home" / "gecko_jax").exists()

    _, log = _evaluate(data, tmp_path / "off", JAX_ENABLE_COMPILATION_CACHE="false")
    assert not (tmp_path / "off" / "gecko_jax").exists()
    assert _HIT not in log
