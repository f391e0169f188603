r"""Runs or prints a sweep of config overrides.

    python launch/sweep.py --config=configs/gecko_minilm.py --sweep=sweeps/lr.py \
        --mode=local [--parallel=2] [--workdir=runs/sweeps/lr] [--config.FIELD=VALUE ...]
    python launch/sweep.py --config=configs/gecko_768.py --sweep=sweeps/lr.py --mode=print \
        [--tpu=NAME --zone=ZONE] --workdir=gs://BUCKET/sweeps/lr

The sweep file defines get_sweep() returning a list of override dicts, e.g.
[{"config.optimizer.learning_rate": lr} for lr in (1e-5, 3e-5)]. `local` trains
each point in WORKDIR/NAME and writes WORKDIR/results.csv; `print` prints one
command per point (launch/tpu/run.py commands with --tpu). Other
--config.FIELD=VALUE flags apply to every point.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from gecko_jax.errors import UserError  # pylint: disable=wrong-import-position
from gecko_jax.launch_tools import sweep  # pylint: disable=wrong-import-position
from gecko_jax.launch_tools import tpu  # pylint: disable=wrong-import-position


def _parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="configs/NAME.py[:ARG].")
    parser.add_argument("--sweep", required=True, help="Python file defining get_sweep().")
    parser.add_argument(
        "--mode",
        choices=("local", "print"),
        default="print",
        help="local: train each point here; print: print the commands.",
    )
    parser.add_argument(
        "--workdir", default="", help="Folder of the points' workdirs (default runs/sweeps/SWEEP_NAME)."
    )
    parser.add_argument("--parallel", type=int, default=1, help="Points trained at once (local).")
    parser.add_argument("--tpu", default="", help="With --mode=print: TPU VM to run each point on.")
    parser.add_argument("--zone", default="", help="Zone of --tpu (default: gcloud's).")
    parser.add_argument("--project", default="", help="Project of --tpu (default: gcloud's).")
    args, extra = parser.parse_known_args(argv)
    unknown = [arg for arg in extra if not arg.startswith(("--config.", "--gin_"))]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args, extra


def main(argv):
    args, extra = _parse(argv)
    config = sweep.load_config(args.config)
    points = sweep.load_sweep(args.sweep, config)
    name = os.path.splitext(os.path.basename(args.sweep))[0]
    root = args.workdir or os.path.join("runs", "sweeps", name)
    if args.mode == "print":
        if args.tpu and not root.startswith("gs://"):
            raise UserError("TPU hosts need a shared workdir: pass --workdir=gs://BUCKET/DIR")
        target = tpu.Slice(args.tpu, args.zone, args.project) if args.tpu else None
        print("\n".join(sweep.print_commands(args.config, root, points, extra, target)))
        return
    if args.tpu:
        raise UserError("--tpu goes with --mode=print; run the printed commands to launch")
    print(f"Sweep {name}: {len(points)} points, {args.parallel} at a time, in {root}", flush=True)
    rows = sweep.run_local(args.config, root, points, args.parallel, extra)
    results = os.path.join(root, sweep.RESULTS_FILE)
    print(sweep.write_table(rows, results))
    print(f"Results: {results}", flush=True)
    failed = [row["name"] for row in rows if row["status"] != "ok"]
    if failed:
        print(
            f"{len(failed)} of {len(rows)} points failed: {', '.join(failed)}; "
            f"their logs are WORKDIR/NAME/{sweep.LOG_FILE}",
            flush=True,
        )
        sys.exit(1)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
