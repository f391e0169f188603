"""Model soups: one model whose parameters average several checkpoints.

    make_soup(parse_inputs("runs/a,runs/b@400"), None, "runs/soup")

Inputs are training workdirs, each at its newest checkpoint or at `@STEP`;
they may be several steps of one run or the ends of runs fine-tuned from one
start. The soup is written as a workdir (the first input's config.json and
config.gin, and one checkpoint holding only parameters), so every tool that
takes a workdir spec (`Encoder.load`, evaluate.py, export.py) reads it;
`soup.json` records what went in. It cannot be resumed as a training run: it
has no optimizer state.

Inputs must describe the same tower: equal `model` config sections (the
starting weights and dropout rates may differ), equal gin bindings and equal
parameter trees.
"""

import dataclasses
import json
import os
import shutil
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np
from flax import traverse_util

from gecko_jax import output_folder
from gecko_jax import checkpoint_io
from gecko_jax.errors import UserError

SOUP_FILE = "soup.json"
# Fields of `config.model` that do not change the function the tower computes.
_IGNORED_MODEL_FIELDS = ("init", "dropout_rate", "attention_dropout_rate", "remat", "attention_impl")


@dataclasses.dataclass(frozen=True)
class SoupInput:
    """One ingredient: a workdir and a checkpoint step (None = the newest)."""

    workdir: str
    step: Optional[int] = None


def parse_inputs(text: str) -> list[SoupInput]:
    """Parses 'W1,W2@STEP,...' into `SoupInput`s.

    Raises:
      UserError: an empty entry or a step that is not a non-negative integer.
    """
    inputs = []
    for entry in text.split(","):
        workdir, sep, step = entry.strip().rpartition("@")
        if not sep:
            workdir, step = step, ""
        if not workdir or (sep and not step.isdigit()):
            raise UserError(
                f"--inputs entry {entry!r} is not WORKDIR or WORKDIR@STEP (STEP a checkpoint number)."
            )
        inputs.append(SoupInput(workdir, int(step) if sep else None))
    return inputs


def parse_weights(text: str, count: int) -> list[float]:
    """Parses '0.3,0.7' into `count` weights, scaled to sum to 1.

    Raises:
      UserError: wrong count, a non-number, a negative weight or a zero sum.
    """
    try:
        weights = [float(w) for w in text.split(",")]
    except ValueError as e:
        raise UserError(f"--weights={text!r} must be comma-separated numbers.") from e
    if len(weights) != count:
        raise UserError(f"--weights has {len(weights)} values for {count} inputs; give one weight per input.")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"--weights={text!r} must be non-negative with a positive sum.")
    return [w / sum(weights) for w in weights]


def _model_fields(config) -> dict[str, Any]:
    fields = config.model.to_dict()
    for name in _IGNORED_MODEL_FIELDS:
        fields.pop(name, None)
    return fields


def _gin_text(workdir: str) -> str:
    path = os.path.join(workdir, checkpoint_io.GIN_FILE)
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as f:
        return f.read()


def _check_same_model(first: SoupInput, first_config, other: SoupInput, config) -> None:
    ours, theirs = _model_fields(first_config), _model_fields(config)
    differing = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
    if differing:
        key = differing[0]
        raise UserError(
            f"{other.workdir} has model.{key}={theirs.get(key)!r} but "
            f"{first.workdir} has {ours.get(key)!r}; a soup needs inputs with "
            "the same model config."
        )
    if _gin_text(first.workdir) != _gin_text(other.workdir):
        raise UserError(
            f"{other.workdir} and {first.workdir} have different "
            f"{checkpoint_io.GIN_FILE} bindings; a soup needs the "
            "same components."
        )


def _check_same_tree(reference: dict[tuple, tuple], params: Any, workdir: str) -> None:
    """Raises UserError unless `params` has the shapes `reference` maps."""
    flat = traverse_util.flatten_dict(params)
    for key in sorted(set(reference) | set(flat)):
        name = "/".join(key)
        if key not in flat or key not in reference:
            raise UserError(
                f"{workdir}: parameter {name} is in one input only; a soup needs identical parameter trees."
            )
        if reference[key] != np.shape(flat[key]):
            raise UserError(
                f"{workdir}: parameter {name} has shape "
                f"{np.shape(flat[key])}, another input "
                f"{reference[key]}."
            )


def _write(output: str, first: SoupInput, config, step: int, params: Any, record: dict) -> None:
    """Writes the soup workdir under a temporary name, then renames it."""
    with output_folder.written_whole(output) as partial:
        checkpoint_io.write_config(partial, config)
        gin_path = os.path.join(first.workdir, checkpoint_io.GIN_FILE)
        if os.path.exists(gin_path):
            shutil.copyfile(gin_path, os.path.join(partial, checkpoint_io.GIN_FILE))
        manager = checkpoint_io.create_manager(partial, keep=1, async_save=False)
        checkpoint_io.save(manager, step, {"params": params}, {"soup": record})
        manager.wait_until_finished()
        manager.close()
        with open(os.path.join(partial, SOUP_FILE), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
            f.write("\n")


def make_soup(
    inputs: Sequence[SoupInput],
    weights: Optional[Sequence[float]],
    output: str,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Averages the parameters of `inputs` into a new workdir `output`.

    Args:
      inputs: the checkpoints; at least one.
      weights: one weight per input summing to 1 (see `parse_weights`); None
        averages uniformly.
      output: the folder to create; it must not exist or be empty.
      progress: called with a short line as each input is read.

    Returns:
      The record written to `output/soup.json`: inputs with their steps and
      weights.

    Raises:
      UserError: bad output folder, unreadable inputs, or inputs whose model
        configs, gin bindings or parameter trees differ.
    """
    if not inputs:
        raise UserError("--inputs is empty; name at least one workdir.")
    output = os.path.abspath(output)
    output_folder.check_new(output)
    weights = list(weights) if weights else [1.0 / len(inputs)] * len(inputs)
    total, shapes, first_config, entries = None, None, None, []
    # One input in memory at a time, added into a float32 running sum.
    for index, (item, weight) in enumerate(zip(inputs, weights)):
        progress(f"reading {item.workdir} ({index + 1}/{len(inputs)})")
        config, step, params = checkpoint_io.restore_step_params(item.workdir, item.step)
        if first_config is None:
            first_config = config
            shapes = {k: np.shape(v) for k, v in traverse_util.flatten_dict(params).items()}
        else:
            _check_same_model(inputs[0], first_config, item, config)
            _check_same_tree(shapes, params, item.workdir)
        scaled = jax.tree.map(lambda x, w=weight: np.asarray(x, np.float32) * np.float32(w), params)
        total = scaled if total is None else jax.tree.map(np.add, total, scaled)
        entries.append({"workdir": os.path.abspath(item.workdir), "step": step, "weight": weight})
    # The soup is numbered after its newest ingredient.
    step = max(entry["step"] for entry in entries)
    record = {"inputs": entries}
    progress(f"writing {output}")
    _write(output, inputs[0], first_config, step, total, record)
    return record
