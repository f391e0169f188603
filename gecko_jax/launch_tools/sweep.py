"""Config sweeps: points from a sweep file, their train commands, local runs and the results table.

A sweep file is Python with `get_sweep()` returning a list of override dicts
such as `{"config.optimizer.learning_rate": 1e-5}`; each dict is one point,
trained in its own workdir `ROOT/NAME`. A grid or a random search is just the
list that file builds.
"""

import concurrent.futures
import csv
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from typing import Any, Optional, Sequence

import ml_collections

from gecko_jax.errors import UserError
from gecko_jax.launch_tools import tpu as tpu_lib

TRAIN_SCRIPT = os.path.join("launch", "train.py")
LOG_FILE = "train.log"
RESULTS_FILE = "results.csv"


def _load_python(path: str, what: str):
    if not os.path.isfile(path):
        raise UserError(f"{what} {path} does not exist")
    spec = importlib.util.spec_from_file_location(f"gecko_sweep_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(config_spec: str) -> ml_collections.ConfigDict:
    """The ConfigDict of `configs/NAME.py[:ARG]`, to check the sweep's fields against."""
    path, _, arg = config_spec.partition(":")
    module = _load_python(path, "config file")
    return module.get_config(arg) if arg else module.get_config()


def load_sweep(path: str, config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """The points of a sweep file, each checked against the config's fields.

    Raises:
      UserError: no get_sweep(), a point that is not a dict, or an unknown field.
    """
    module = _load_python(path, "sweep file")
    if not hasattr(module, "get_sweep"):
        raise UserError(
            f"{path} has no get_sweep(); define one returning a list of dicts "
            "such as {'config.optimizer.learning_rate': 1e-5}"
        )
    points = module.get_sweep()
    if not isinstance(points, (list, tuple)) or not points:
        raise UserError(f"{path}: get_sweep() must return a non-empty list of dicts")
    for index, point in enumerate(points):
        if not isinstance(point, dict):
            raise UserError(f"{path}: point {index} is a {type(point).__name__}, not a dict")
        for key in point:
            _check_field(config, key, f"{path}: point {index}")
    return [dict(point) for point in points]


def _check_field(config: ml_collections.ConfigDict, key: str, where: str) -> None:
    parts = key.split(".")
    node = config
    for part in parts[1:]:
        if parts[0] != "config" or not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise UserError(
                f"{where}: unknown field {key!r}; keys look like "
                "'config.optimizer.learning_rate' (fields in gecko_jax/config_base.py)"
            )
        node = node[part]
    if len(parts) < 2 or isinstance(node, ml_collections.ConfigDict):
        raise UserError(f"{where}: {key!r} is not a single field")


def _flag_value(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        trailing = "," if len(value) == 1 else ""  # (x,) stays a tuple.
        return "(" + ",".join(_flag_value(v) for v in value) + trailing + ")"
    return str(value)


def point_flags(point: dict[str, Any]) -> list[str]:
    """`--config.FIELD=VALUE` for each override of a point."""
    return [f"--{key}={_flag_value(value)}" for key, value in point.items()]


def point_name(index: int, point: dict[str, Any]) -> str:
    """A workdir name that says what the point changes, e.g. 'p01_learning_rate=1e-05'."""
    parts = [
        f"{key.rsplit('.', 1)[-1]}={_flag_value(value).replace(',', '-')}" for key, value in point.items()
    ]
    name = f"p{index:02d}" + ("_" + "_".join(parts) if parts else "")
    return re.sub(r"[^A-Za-z0-9_.=+-]", "", name)[:120]


def train_args(config_spec: str, workdir: str, point: dict[str, Any], extra: Sequence[str] = ()) -> list[str]:
    """The flags of launch/train.py for one point."""
    return [f"--config={config_spec}", f"--workdir={workdir}", *extra, *point_flags(point)]


def print_commands(
    config_spec: str,
    root: str,
    points: list[dict[str, Any]],
    extra: Sequence[str] = (),
    tpu: Optional[tpu_lib.Slice] = None,
) -> list[str]:
    """One shell command per point: launch/train.py, or launch/tpu/run.py with `tpu`."""
    lines = []
    for index, point in enumerate(points):
        name = point_name(index, point)
        args = train_args(config_spec, f"{root.rstrip('/')}/{name}", point, extra)
        if tpu is None:
            lines.append(shlex.join(["python", TRAIN_SCRIPT, *args]))
        else:
            lines.append(
                shlex.join(
                    [
                        "python",
                        os.path.join("launch", "tpu", "run.py"),
                        f"--name={tpu.name}",
                        *tpu.location_flags(),
                        f"--run_name={name}",
                        "--",
                        *args,
                    ]
                )
            )
    return lines


def _last_step_metrics(log_text: str) -> dict[str, float]:
    """The metrics of the last 'step N/M | name value | ...' line of a training log."""
    lines = [line for line in log_text.splitlines() if re.match(r"step \d+/\d+ \|", line)]
    if not lines:
        return {}
    metrics = {}
    for part in lines[-1].split(" | ")[1:]:
        name, _, value = part.rpartition(" ")
        try:
            metrics[f"train/{name}"] = float(value)
        except ValueError:
            continue
    return metrics


def _last_eval(workdir: str) -> dict[str, float]:
    path = os.path.join(workdir, "eval.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    if not lines:
        return {}
    record = json.loads(lines[-1])
    record.pop("step", None)
    return {f"eval/{k}": v for k, v in record.items() if isinstance(v, (int, float))}


def _run_point(
    repo: str, config_spec: str, workdir: str, point: dict[str, Any], extra: Sequence[str]
) -> dict[str, Any]:
    os.makedirs(workdir, exist_ok=True)
    command = [
        sys.executable,
        os.path.join(repo, TRAIN_SCRIPT),
        *train_args(config_spec, workdir, point, extra),
    ]
    with open(os.path.join(workdir, LOG_FILE), "w") as log:
        returncode = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    with open(os.path.join(workdir, LOG_FILE)) as log:
        text = log.read()
    result = {"status": "ok" if returncode == 0 else f"failed (exit {returncode})"}
    if returncode:
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        lines = errors or [line for line in text.splitlines() if line.strip()]
        result["error"] = lines[-1][:200] if lines else ""
    result.update(_last_step_metrics(text))
    result.update(_last_eval(workdir))
    return result


def run_local(
    config_spec: str, root: str, points: list[dict[str, Any]], parallel: int = 1, extra: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Trains every point in its own workdir, `parallel` at a time; failures do not stop others.

    Args:
      config_spec: configs/NAME.py[:ARG].
      root: the folder holding one workdir per point, and results.csv.
      points: the override dicts.
      parallel: how many trainings run at once.
      extra: flags given to every point's launch/train.py.

    Returns:
      One row per point: name, the overrides, status, the last logged
      training metrics ('train/...') and the last evaluation ('eval/...').
    """
    if parallel < 1:
        raise UserError(f"--parallel={parallel}; use 1 or more")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = [point_name(i, p) for i, p in enumerate(points)]
    rows: list[Optional[dict[str, Any]]] = [None] * len(points)
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel) as pool:
        futures = {
            pool.submit(_run_point, repo, config_spec, os.path.join(root, name), point, extra): i
            for i, (name, point) in enumerate(zip(names, points))
        }
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            index = futures[future]
            result = future.result()
            rows[index] = {"name": names[index], **points[index], **result}
            detail = f": {result['error']}" if "error" in result else ""
            print(f"[{done}/{len(points)}] {names[index]} {result['status']}{detail}", flush=True)
    return rows


def write_table(rows: list[dict[str, Any]], path: str) -> str:
    """Writes the rows as CSV to `path` and returns them as an aligned console table."""
    columns = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    cells = [[_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]
    lines = ["  ".join(column.ljust(width) for column, width in zip(columns, widths))]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
