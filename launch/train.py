r"""Trains a text embedding model.

    python launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local \
        [--config.FIELD=VALUE ...] [--gin_file=F.gin] [--gin_bindings='build_loss.builder=@f']

Run the same command on every host of a TPU slice; rerunning it on the same
workdir resumes from the newest checkpoint.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe: configs/NAME.py[:ARG].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files that swap components.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'f.x = 1'.")
flags.mark_flags_as_required(["config", "workdir"])


def _initialize_distributed() -> None:
    """Joins the other hosts of a multi-host job; a no-op on one machine."""
    import jax  # pylint: disable=g-import-not-at-top
    multi_tpu_host = "," in os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if multi_tpu_host or os.environ.get("JAX_COORDINATOR_ADDRESS"):
        jax.distributed.initialize()


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import gin  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import trainer  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS["verbosity"].present:
        # Orbax and seqio log every file operation at INFO; keep the console to
        # our progress lines unless the user asks for more with -v.
        logging.set_verbosity(logging.WARNING)
    _initialize_distributed()
    gin.parse_config_files_and_bindings(_GIN_FILES.value, _GIN_BINDINGS.value)
    trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top
    cli.run(main)
