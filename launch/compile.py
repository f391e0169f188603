r"""Compiles a config's train step for a target mesh, before a pod is booked.

    python launch/compile.py --config=configs/gecko_768.py --mesh=2,4,1 \
        [--config.FIELD=VALUE ...]
    python launch/compile.py --config=configs/gecko_768.py --topology=v5e:4x4 \
        [--config.FIELD=VALUE ...]

Either way the script lowers and compiles the very train step
`launch/train.py` would run (no data, no weights) and prints the memory each
device needs and the FLOPs of one step, so a configuration that cannot fit
shows up before a pod is booked.

`--mesh` gives the (data, fsdp, tensor) sizes and simulates that many CPU
devices; the temporaries are XLA:CPU's accounting, which the TPU compiler
only approximates.

`--topology` compiles with XLA:TPU itself for a Cloud TPU slice that this host
does not have (libtpu describes it; `pip install -e .[tpu-aot]`): v4:AxBxC,
v5p:AxBxC, v5e:AxB or v6e:AxB, chips along each axis. The mesh is the
config's `mesh_shape` over those chips, its -1 axis filled in. It adds

    per-chip peak: 14.20 GiB of 15.75 GiB HBM

(a stable line for tools), a fits / does-not-fit verdict, the model's and
XLA's FLOPs per chip and, where XLA:TPU's cost model gives one, its estimated
step time with the MFU that implies. The exit status is 1 when the step does not fit a chip
(everything is still printed), 2 for a usage error. gecko_768 on v5e:4x4 takes
about 1.5 minutes and 4-5 GB of host memory to compile on a 2-core CPU.
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
        print(
            f"error: --mesh={text} must be three positive sizes data,fsdp,tensor such as 2,4,1",
            file=sys.stderr,
        )
        sys.exit(2)
    return dims


_DIMS = _mesh_dims(sys.argv)
os.environ["XLA_FLAGS"] = " ".join(
    [
        flag
        for flag in os.environ.get("XLA_FLAGS", "").split()
        if not flag.startswith("--xla_force_host_platform_device_count")
    ]
    + [f"--xla_force_host_platform_device_count={_DIMS[0] * _DIMS[1] * _DIMS[2]}"]
)
# Also with --topology: nothing runs on a TPU, only libtpu's compiler is used.
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import logging  # pylint: disable=g-import-not-at-top,wrong-import-position
from ml_collections import config_flags  # pylint: disable=g-import-not-at-top,wrong-import-position

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe: configs/NAME.py[:ARG].", lock_config=True)
flags.DEFINE_string("mesh", "1,1,1", "Mesh sizes data,fsdp,tensor, e.g. 2,4,1.")
_TOPOLOGY = flags.DEFINE_string(
    "topology",
    None,
    "A Cloud TPU slice to compile for instead of --mesh, e.g. v5e:4x4 "
    "(v4:AxBxC, v5p:AxBxC, v5e:AxB, v6e:AxB); needs pip install -e .[tpu-aot].",
)
flags.mark_flags_as_required(["config"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top
    from gecko_jax.errors import UserError  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import aot  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import sharding  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import tpu_topology  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if _TOPOLOGY.value is not None:
        if flags.FLAGS["mesh"].present:
            raise UserError(
                "--mesh and --topology exclude each other: --mesh simulates CPU "
                "devices, --topology compiles for a TPU slice"
            )
        # Checked before the config loads, so a typo costs no time.
        tpu_topology.check_libtpu()
        tpu_topology.parse_topology(_TOPOLOGY.value)
    cli.check_config_file(_CONFIG)
    config = _CONFIG.value
    recipe = config_flags.get_config_filename(flags.FLAGS["config"])
    if _TOPOLOGY.value is not None:
        print(
            f"Compiling the train step of {recipe} (sharding={config.sharding}, batch "
            f"{config.batch_size}) for TPU {_TOPOLOGY.value} with XLA:TPU...",
            flush=True,
        )
        report = tpu_topology.compile_for_topology(config, _TOPOLOGY.value)
        print(tpu_topology.format_report(report), flush=True)
        sys.exit(0 if report.fits else 1)
    mesh = sharding.create_mesh(dict(zip(sharding.MESH_AXES, _DIMS)))
    print(
        f"Compiling the train step of {recipe} (sharding={config.sharding}, batch "
        f"{config.batch_size}) for mesh {','.join(map(str, _DIMS))}...",
        flush=True,
    )
    print(aot.format_report(aot.compile_train_step(config, mesh)), flush=True)


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top,wrong-import-position

    cli.run(main)
