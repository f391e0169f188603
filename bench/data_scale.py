r"""Training data at scale: preparation speed, and start-up, memory and speed on prepared data.

    python bench/data_scale.py [--sizes=10000,100000,1000000] [--batch_size=1024] [--batches=50]

For each size, writes that many synthetic (query, positive, hard negative)
JSONL examples, then runs two fresh Python processes on them with the
MiniLM vocabulary and max_length 128, as `configs/gecko_minilm.py` trains:

1. preparation: `TrainData` on an empty cache (reads, formats, tokenizes
   and writes the ArrayRecord shards), examples/s;
2. a training start on the prepared data: seconds from the start of the
   process to the first batch, peak RSS of the process, and batches/s over
   `--batches` batches of `--batch_size` rows (random access by index).

Each figure is printed with its ratio against the smallest size. Targets:
start-up and memory at 1M within 1.5x of 10k, preparation at least as fast
as the former in-memory path (about 3.5k examples/s on a 2-core CPU), and
batches/s far above the train step's (`bench/input_pipeline.py`).
"""

import json
import os
import subprocess
import sys
import shutil
import tempfile

from absl import app
from absl import flags
import numpy as np

_SIZES = flags.DEFINE_list("sizes", ["10000", "100000", "1000000"], "Numbers of examples.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 1024, "Rows per batch.")
_BATCHES = flags.DEFINE_integer("batches", 50, "Timed batches.")
_WORKDIR = flags.DEFINE_string("workdir", "", "Where to write data and cache ('' = a temporary folder).")

# Runs in a fresh process, so that its peak RSS is its own.
_MEASURE = r"""
import json, resource, sys, time
started = time.perf_counter()
from gecko_jax.config_base import base_config
from gecko_jax.data.pipeline import TrainData
from gecko_jax.data.vocabularies import get_vocabulary
path, cache, batch_size, batches = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
config = base_config().data
config.update({"train_files": path, "cache_dir": cache, "max_length": 128, "query_max_length": 48})
opened = time.perf_counter()
data = TrainData(config, get_vocabulary("minilm"), batch_size, 0)
prepared = time.perf_counter()
next(data)
first = time.perf_counter()
for _ in range(batches):
    next(data)
done = time.perf_counter()
print(json.dumps({"examples": data.num_examples, "open_s": prepared - opened,
                  "first_batch_s": first - started,
                  "batches_per_s": batches / (done - first),
                  "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

_WORDS = np.array(
    "the of and to in a is that for it as was with be by on not he this are or his from at which but "
    "have an they you were her she there been one all we their has would when if so no what up its "
    "out who them more some into time could only new these other than then two may first any like "
    "now my such make over our even most me state after also made many did must before back see "
    "through way where get much go well your know should down work year because come people just "
    "say each those take day good how long little own".split()
)


def write_examples(path: str, count: int, seed: int = 0) -> None:
    """Writes `count` synthetic triplets: 10-word queries, 60-word passages, every other with a negative."""
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, count, 10000):
            rows = min(10000, count - start)
            words = _WORDS[rng.integers(len(_WORDS), size=(rows, 130))]
            for i in range(rows):
                row = {
                    "query": " ".join(words[i, :10]),
                    "positive": " ".join(words[i, 10:70]),
                    "title": f"doc {start + i}",
                    "task": "question answering",
                    "id": start + i,
                }
                if (start + i) % 2 == 0:
                    row["negative"] = " ".join(words[i, 70:130])
                f.write(json.dumps(row) + "\n")


def _measure(path: str, cache: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, path, cache, str(_BATCH_SIZE.value), str(_BATCHES.value)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    root = _WORKDIR.value or tempfile.mkdtemp(prefix="gecko_jax_data_scale_")
    os.makedirs(root, exist_ok=True)
    rows = []
    for size in (int(s) for s in _SIZES.value):
        path = os.path.join(root, f"train-{size}.jsonl")
        if not os.path.exists(path):
            write_examples(path, size)
        cache = os.path.join(root, f"cache-{size}")
        shutil.rmtree(cache, ignore_errors=True)  # The first start prepares.
        preparation = _measure(path, cache)
        prepare_rate = size / preparation["open_s"]
        second = _measure(path, cache)
        rows.append({"size": size, "prepare_per_s": prepare_rate, **second})
        print(
            f"{size}: prepared at {prepare_rate:,.0f} examples/s; start on prepared data "
            f"{second['first_batch_s']:.1f} s to the first batch, peak RSS {second['peak_rss_gb']:.2f} GB, "
            f"{second['batches_per_s']:.1f} batches/s",
            flush=True,
        )
    base = rows[0]
    print(
        f"\n| examples | prepare (examples/s) | start to first batch (s) | peak RSS (GB) | "
        f"batches/s ({_BATCH_SIZE.value} rows) |"
    )
    print("|---:|---:|---:|---:|---:|")
    for row in rows:

        def cell(key, fmt):
            return f"{row[key]:{fmt}} ({row[key] / base[key]:.2f}x)"

        print(
            f"| {row['size']:,} | {cell('prepare_per_s', ',.0f')} | {cell('first_batch_s', '.1f')} | "
            f"{cell('peak_rss_gb', '.2f')} | {cell('batches_per_s', '.1f')} |"
        )
    print(f"\nratios against {base['size']:,} examples; data and cache in {root}")


if __name__ == "__main__":
    app.run(main)
