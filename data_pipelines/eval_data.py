r"""Writes the bundled data in the formats `launch/evaluate.py` reads.

    python data_pipelines/eval_data.py --data_dir=../shared/data --output=/tmp/evaldata

writes, under --output:

* `squad-dev-a/`: SQuAD dev-a as a BEIR folder (corpus.jsonl, queries.jsonl,
  qrels/test.tsv);
* `banking77/`: Banking77's train.csv split 75/25 at random (seed 0) into
  train.csv and test.csv;
* `stackoverflow.csv`: the 20,000 StackOverflow titles with their labels.

SICK and STS Benchmark files are read by `--task=sts` as they are.
"""

import os

from absl import flags

from gecko_jax import cli
from gecko_jax.errors import UserError
from gecko_jax.evaluation import bundled_data

_DATA_DIR = flags.DEFINE_string("data_dir", None, "The bundled data folder.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write into.")


def main(argv):
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not _DATA_DIR.value or not _OUTPUT.value:
        raise UserError("--data_dir and --output are required")
    if not os.path.isdir(_DATA_DIR.value):
        raise UserError(f"--data_dir={_DATA_DIR.value}: no such folder")
    data_dir, output = _DATA_DIR.value, _OUTPUT.value
    os.makedirs(output, exist_ok=True)
    bundled_data.squad_to_beir(
        os.path.join(data_dir, "squad", "dev-a.json"), os.path.join(output, "squad-dev-a")
    )
    bundled_data.split_train_test(
        os.path.join(data_dir, "banking77", "train.csv"), os.path.join(output, "banking77")
    )
    bundled_data.stackoverflow_to_csv(
        os.path.join(data_dir, "stackoverflow"), os.path.join(output, "stackoverflow.csv")
    )
    print(f"wrote squad-dev-a/, banking77/ and stackoverflow.csv under {output}")


if __name__ == "__main__":
    cli.run(main)
