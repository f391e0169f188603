"""`bench/accelerator_mfu.py`: its table, and its `--tiny` CPU run end to end."""

import importlib.util
import math
import os
import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
_SCRIPT = REPO / "bench" / "accelerator_mfu.py"
_SPEC = importlib.util.spec_from_file_location("accelerator_mfu", _SCRIPT)
accelerator_mfu = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(accelerator_mfu)

# | model | attention | layers | batch | step s | tokens/s | MFU | HFU | vs xla |
_ROW = re.compile(
    r"^\| (\S+) \| (\S+) \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+)% \| "
    r"([\d.]+%|n/a) \| ([\d.]+)x \|$",
    re.M,
)


def test_table_has_ratios_against_the_xla_row_of_each_model():
    rows = [
        accelerator_mfu.Row("gecko_270m", "xla", 18, 64, 0.2, 1000.0, 0.4, 0.5),
        accelerator_mfu.Row("gecko_270m", "splash", 18, 64, 0.1, 2000.0, 0.8, None),
        accelerator_mfu.Row(
            "gecko_768", "xla", 6, 64, None, None, None, None, error="XlaRuntimeError: RESOURCE_EXHAUSTED"
        ),
        accelerator_mfu.Row("gecko_768", "splash", 6, 64, 0.5, 400.0, 0.3, 0.2),
    ]
    lines = accelerator_mfu.format_table(rows).splitlines()
    assert lines[2] == "| gecko_270m | xla | 18 | 64 | 0.2000 | 1,000 | 40.0% | 50.0% | 1.00x |"
    assert lines[3] == "| gecko_270m | splash | 18 | 64 | 0.1000 | 2,000 | 80.0% | n/a | 2.00x |"
    assert lines[4] == ("| gecko_768 | xla | 6 | 64 | failed: XlaRuntimeError: RESOURCE_EXHAUSTED | | | | |")
    assert lines[5].endswith("| 30.0% | 20.0% | n/a |")  # No baseline to compare with.


@pytest.mark.slow
def test_tiny_mode_prints_a_row_per_model_and_attention():
    # About 2 minutes on a shared 2-core CPU: four train steps to compile.
    env = dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu")
    result = subprocess.run(
        [sys.executable, str(_SCRIPT), "--tiny"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = _ROW.findall(result.stdout)
    assert [(r[0], r[1]) for r in rows] == [
        ("gecko_270m", "xla"),
        ("gecko_270m", "splash"),
        ("gecko_768", "xla"),
        ("gecko_768", "splash"),
    ]
    for row in rows:
        # Splash in interpret mode runs its grid as loops, whose bodies XLA
        # counts once: no HFU for those rows. The XLA rows have one.
        hfu = None if row[7] == "n/a" else row[7].rstrip("%")
        assert hfu is not None or row[1] == "splash", row
        numbers = [float(v.replace(",", "")) for v in (*row[4:7], row[8])] + ([float(hfu)] if hfu else [])
        assert all(math.isfinite(v) and v > 0 for v in numbers), row
    assert all(row[2:4] == ("2", "4") for row in rows)
    assert "Splash in Pallas interpret mode" in result.stdout
