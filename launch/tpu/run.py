r"""Runs launch/train.py on every worker of a slice, in the background.

    python launch/tpu/run.py --name=gecko --zone=us-west4-a [--run_name=gecko_768] [--dry-run] \
        -- --config=configs/gecko_768.py --workdir=gs://BUCKET/gecko_768 [--config.FIELD=VALUE ...]

Everything after `--` goes to launch/train.py unchanged. Each worker logs to
~/gecko_jax/logs/RUN_NAME.log; follow it with launch/tpu/logs.py. Rerunning
the same command after a preemption resumes from the newest checkpoint.
"""

import argparse

from gecko_jax.launch_tools import tpu


def _arguments(parser):
    parser.add_argument("--run_name", default="train", help="Name of the log file.")
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the flags of launch/train.py.")


def _build(tpu_slice, args):
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    return tpu.run_commands(tpu_slice, train_args, args.run_name)


if __name__ == "__main__":
    tpu.main(__doc__, _arguments, _build)
