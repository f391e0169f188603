r"""Peak host memory and seconds per step of `configs/gecko_270m.py` on CPU.

Runs `launch/train.py` on the gecko_270m recipe for a few steps in a child
process (one CPU device, evaluation off) and reports:

  peak RSS   the child's peak resident set size, `ru_maxrss` of
             `resource.getrusage(RUSAGE_CHILDREN)` once it has exited. It
             covers the whole run: imports, reading and dequantizing the GGUF
             weights, the data pipeline, compilation, the train steps and the
             final checkpoint.
  s/step     batch_size / examples_per_sec of each logged step after the
             first. The trainer already leaves compiling out of its rates;
             the first step still pays one-time costs such as the first
             run of each compiled kernel.

    python bench/gemma_270m_memory.py [--steps=4] [--query_max_length=128] [--remat=true]
        [--freeze_embedding=false]

The defaults train the issue's shape: batch 8, and query, positive and
negative texts of 128 tokens each.
"""

import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STEPS = flags.DEFINE_integer("steps", 4, "Train steps (the first one's time is not reported).")
_BATCH = flags.DEFINE_integer("batch_size", 8, "Global batch size.")
_QUERY_LENGTH = flags.DEFINE_integer(
    "query_max_length", 128, "Query tokens (positives and negatives take 128)."
)
_REMAT = flags.DEFINE_bool("remat", True, "Recompute layer activations in the backward pass.")
_FREEZE_EMBEDDING = flags.DEFINE_bool(
    "freeze_embedding", False, "Freeze the token embedding (no Adam moments for it)."
)
_STEP_LINE = re.compile(r"^step (\d+)/\d+ .*examples_per_sec ([0-9.e+-]+)")


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as workdir:
        command = [
            sys.executable,
            os.path.join(_REPO, "launch", "train.py"),
            f"--config={os.path.join(_REPO, 'configs', 'gecko_270m.py')}",
            f"--workdir={workdir}",
            f"--config.total_steps={_STEPS.value}",
            f"--config.batch_size={_BATCH.value}",
            f"--config.data.query_max_length={_QUERY_LENGTH.value}",
            f"--config.model.remat={_REMAT.value}",
            *(["--config.optimizer.frozen=('embedder/',)"] if _FREEZE_EMBEDDING.value else []),
            "--config.log_every=1",
            "--config.checkpoint_every=0",
            "--config.evals={}",
        ]
        env = dict(os.environ, XLA_FLAGS="", TF_CPP_MIN_LOG_LEVEL="3")
        print("running:", " ".join(command[1:]), flush=True)
        seconds = []
        with subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as proc:
            for line in proc.stdout:
                match = _STEP_LINE.match(line)
                if match:
                    print(line.rstrip(), flush=True)
                    if int(match.group(1)) > 1:
                        seconds.append(_BATCH.value / float(match.group(2)))
        if proc.returncode:
            sys.exit(f"error: the training run failed with exit status {proc.returncode}")
    # ru_maxrss is in KiB on Linux.
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    print(
        f"batch {_BATCH.value} x 3 texts (query {_QUERY_LENGTH.value}, documents 128 tokens), "
        f"remat={_REMAT.value}, freeze_embedding={_FREEZE_EMBEDDING.value}"
    )
    print(f"peak RSS {peak_gib:.2f} GiB")
    if seconds:
        print(
            f"s/step {statistics.median(seconds):.2f} (median of steps 2-{_STEPS.value}; "
            f"min {min(seconds):.2f}, max {max(seconds):.2f})"
        )


if __name__ == "__main__":
    app.run(main)
