r"""Averages the parameters of several checkpoints into one model (a soup).

    python launch/soup.py --inputs=runs/a,runs/b@400 [--weights=0.7,0.3] \
        --output=runs/soup

Each input is a training workdir, at its newest checkpoint or at @STEP.
Weights are scaled to sum to 1; without them the average is uniform. The
output is a workdir that `Encoder.load`, evaluate.py and export.py read.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax import cli  # pylint: disable=g-import-not-at-top

_INPUTS = flags.DEFINE_string("inputs", None, "Comma-separated WORKDIR or WORKDIR@STEP entries.")
_WEIGHTS = flags.DEFINE_string("weights", None, "Comma-separated weights, one per input; default uniform.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to create.")


def main(argv):
    cli.check_args(argv, _INPUTS, _OUTPUT)
    # Imported late: orbax and JAX take seconds to start.
    from gecko_jax.training import soup  # pylint: disable=g-import-not-at-top

    inputs = soup.parse_inputs(_INPUTS.value)
    weights = soup.parse_weights(_WEIGHTS.value, len(inputs)) if _WEIGHTS.value else None
    record = soup.make_soup(inputs, weights, _OUTPUT.value, progress=cli.progress_printer("soup"))
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    cli.run(main)
