r"""Trains a text embedding model.

    python launch/train.py --config=configs/gecko_768.py:runlocal --workdir=runs/local \
        [--config.FIELD=VALUE ...] [--gin_file=F.gin] [--gin_bindings='build_loss.builder=@f']

Run the same command on every host of a TPU slice; rerunning it on the same
workdir resumes from the newest checkpoint. Exit status: 0 when the run
finished, 143 when SIGTERM (a preemption) stopped it after a checkpoint (130
after Ctrl-C; a second Ctrl-C aborts without saving), 2 for
a bad config or input, 3 when another process of a multi-host job died (the
last two with one line on stderr).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import app  # pylint: disable=g-import-not-at-top
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Recipe: configs/NAME.py[:ARG].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and results.")
_GIN_FILES = flags.DEFINE_multi_string("gin_file", [], "Gin files that swap components.")
_GIN_BINDINGS = flags.DEFINE_multi_string("gin_bindings", [], "Gin bindings, e.g. 'f.x = 1'.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top

    cli.check_config_file(_CONFIG)
    import gin  # pylint: disable=g-import-not-at-top
    import jax  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import distributed  # pylint: disable=g-import-not-at-top
    from gecko_jax.training import trainer  # pylint: disable=g-import-not-at-top

    if not flags.FLAGS["verbosity"].present:
        # Orbax and seqio log every file operation at INFO; keep the console to
        # our progress lines unless the user asks for more with -v.
        logging.set_verbosity(logging.WARNING)
    # Before anything asks JAX for devices: on a pod slice they span all hosts.
    distributed.initialize()
    gin.parse_config_files_and_bindings(_GIN_FILES.value, _GIN_BINDINGS.value)
    try:
        trainer.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except trainer.Preempted as stop:
        # Not 0: a scheduler must tell a preempted run, to be rerun, from a finished one.
        print(stop, flush=True)
        sys.exit(stop.exit_status)
    except Exception as err:  # pylint: disable=broad-except
        if not distributed.is_peer_failure(err):
            raise
        from gecko_jax import checkpoint_io  # pylint: disable=g-import-not-at-top

        steps = checkpoint_io.finished_steps(_WORKDIR.value)
        resume = f"from checkpoint step {steps[0]}" if steps else "from the start"
        distributed.leave_broken_job(
            f"process {jax.process_index()}: another process of this job stopped "
            f"({str(err).splitlines()[0][:160]}); rerun the same command on every host to "
            f"resume {resume}"
        )


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top

    cli.run(main)
