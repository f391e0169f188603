r"""Shows the end of a run's log on one worker of a slice.

    python launch/tpu/logs.py --name=gecko --zone=us-west4-a [--run_name=train] \
        [--worker=0] [--lines=50] [--follow] [--dry-run]
"""

from gecko_jax.launch_tools import tpu


def _arguments(parser):
    parser.add_argument("--run_name", default="train", help="The --run_name given to run.py.")
    parser.add_argument("--worker", default="0", help="Worker index; 0 prints the progress.")
    parser.add_argument("--lines", type=int, default=50, help="Lines to show.")
    parser.add_argument("--follow", action="store_true", help="Keep following the log.")


if __name__ == "__main__":
    tpu.main(
        __doc__,
        _arguments,
        lambda tpu_slice, args: tpu.logs_commands(
            tpu_slice, args.run_name, args.worker, args.lines, args.follow
        ),
    )
