r"""Creates a Cloud TPU VM slice.

    python launch/tpu/create.py --name=gecko --zone=us-west4-a \
        --accelerator=v5litepod-16 [--version=v2-alpha-tpuv5-lite] [--spot] [--dry-run]
"""

from gecko_jax.launch_tools import tpu


def _arguments(parser):
    parser.add_argument(
        "--accelerator", required=True, help="Accelerator type, e.g. v5litepod-16 (16 chips, 4 hosts)."
    )
    parser.add_argument(
        "--version",
        default="v2-alpha-tpuv5-lite",
        help="TPU VM software version (runtime image) for that accelerator.",
    )
    parser.add_argument("--spot", action="store_true", help="Use preemptible spot capacity.")


if __name__ == "__main__":
    tpu.main(
        __doc__,
        _arguments,
        lambda tpu_slice, args: tpu.create_commands(tpu_slice, args.accelerator, args.version, args.spot),
    )
