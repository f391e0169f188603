r"""Prints the parameter count of each recipe's tower, without allocating it.

    python bench/param_counts.py [--configs=gecko_minilm,gecko_270m,gecko_768,gecko_768:runlocal]

Shapes come from `jax.eval_shape` of the tower's init, so the ~1B gecko_768
costs no memory.
"""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags

from gecko_jax.models.registry import build_tower
from gecko_jax.training.train_step import param_shapes

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONFIGS = flags.DEFINE_list(
    "configs", ["gecko_minilm", "gecko_270m", "gecko_768", "gecko_768:runlocal"], "Recipes, NAME[:ARG]."
)


def _get_config(file: str, arg: str):
    spec = importlib.util.spec_from_file_location(file, os.path.join(_REPO, "configs", f"{file}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def main(argv):
    del argv
    for name in _CONFIGS.value:
        file, _, arg = name.partition(":")
        config = _get_config(file, arg)
        shapes = param_shapes(build_tower(config.model), 16)
        total = sum(x.size for x in jax.tree.leaves(shapes))
        backbone = sum(x.size for x in jax.tree.leaves(shapes["backbone"]))
        print(f"{name:<20} {config.model.name:<6} {total:>15,} parameters ({backbone:,} in the backbone)")


if __name__ == "__main__":
    app.run(main)
