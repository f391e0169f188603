r"""Compiles a config's train step for a target mesh on simulated CPU devices.

    python launch/compile.py --config=configs/gecko_768.py --mesh=2,4,1 \
        [--config.FIELD=VALUE ...]

`--mesh` gives the (data, fsdp, tensor) sizes; the script simulates that many
CPU devices, lowers and compiles the very train step `launch/train.py` would
run, and prints the memory each device needs and the FLOPs of one step, so a
configuration that cannot fit shows up before a pod is booked.
"""

import os
import sys


def _mesh_dims(argv: list[str]) -> list[int]:
    """The --mesh sizes, read before absl so that the device count is set before jax loads."""
    values = [arg.split("=", 1)[1] for arg in argv if arg.startswith("--mesh=")]
    text = values[-1] if values else "1,1,1"
    try:
        dims = [int(part) for part in text.split(",")]
    except ValueError:
        dims = []
    if len(dims) != 3 or min(dims) < 1:
        print(f"error: --mesh={text} must be three positive sizes data,fsdp,tensor "
              "such as 2,4,1", file=sys.stderr)
        sys.exit(2)
    return dims


_DIMS = _mesh_dims(sys.argv)
os.environ["XLA_FLAGS"] = " ".join(
    [flag for flag in os.environ.get("XLA_FLAGS", "").split()
     if not flag.startswith("--xla_force_host_platform_device_count")]
    + [f"--xla_force_host_platform_device_count={_DIMS[0] * _DIMS[1] * _DIMS[2]}"])
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe: configs/NAME.py[:ARG].",
                                          lock_config=True)
flags.DEFINE_string("mesh", "1,1,1", "Mesh sizes data,fsdp,tensor, e.g. 2,4,1.")
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import aot  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import sharding  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    cli.check_config_file(_CONFIG)
    config = _CONFIG.value
    mesh = sharding.create_mesh(dict(zip(sharding.MESH_AXES, _DIMS)))
    print(f"Compiling the train step of {config_flags.get_config_filename(flags.FLAGS['config'])} "
          f"(sharding={config.sharding}, batch {config.batch_size}) for mesh "
          f"{','.join(map(str, _DIMS))}...", flush=True)
    print(aot.format_report(aot.compile_train_step(config, mesh)), flush=True)


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position
    cli.run(main)
