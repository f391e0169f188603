"""The corpus FRet retrieves from, embedded once in blocks on disk.

Passages go to blocks by a stable hash of their id, so each block can be
embedded by a different worker. A block is two files under OUTPUT/corpus/:
`block-00003.jsonl` (its passages, sorted by id) and `block-00003.npy`
(float32 [n, D] unit vectors, row i for line i). The .npy is written last and
renamed into place, so a block with its .npy is complete: a rerun skips it,
and a crash loses at most the block being embedded.

`load_index` reads every block back for the retrieve stage: the vectors as
one host array (exact search moves them to the device a block at a time) and
the passages, to hand the candidates' texts to the reranker.
"""

import dataclasses
import io
import json
import math
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from gecko_jax.fret.passages import Passage
from gecko_jax.fret.passages import stable_hash

# Passages per block, on average; a block is embedded in one go by one worker.
DEFAULT_BLOCK_SIZE = 8192


def num_blocks(num_passages: int, block_size: int = DEFAULT_BLOCK_SIZE) -> int:
    return max(1, math.ceil(num_passages / block_size))


def block_of(passage_id: str, blocks: int) -> int:
    return stable_hash("corpus-block", passage_id) % blocks


def block_prefix(index_dir: str, block: int) -> str:
    return os.path.join(index_dir, f"block-{block:05d}")


def document_text(passage: Passage) -> str:
    """What the embedder sees for a passage: title and text, as BEIR joins them."""
    return f"{passage['title']} {passage['text']}".strip()


def write_atomically(path: str, data: bytes) -> None:
    """Writes `data` to a temporary name, then renames it over `path`."""
    tf.io.gfile.makedirs(os.path.dirname(path))
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def is_complete(prefix: str) -> bool:
    return tf.io.gfile.exists(prefix + ".npy")


def has_complete_blocks(index_dir: str) -> bool:
    return bool(tf.io.gfile.glob(os.path.join(index_dir, "block-*.npy")))


def write_block(prefix: str, passages: Sequence[Passage], vectors: np.ndarray) -> None:
    """Stores one embedded block (passages first, the .npy last as the marker)."""
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in passages)
    write_atomically(prefix + ".jsonl", lines.encode("utf-8"))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vectors, np.float32))
    write_atomically(prefix + ".npy", buffer.getvalue())


@dataclasses.dataclass(frozen=True)
class CorpusIndex:
    """Every passage of the corpus with its unit vector."""

    vectors: np.ndarray  # float32 [N, D]
    passages: list[Passage]
    position: dict[str, int]  # Passage id -> row.


def load_index(prefixes: Sequence[str]) -> CorpusIndex:
    """Reads the blocks `prefixes` names (in sorted order) into one index."""
    vectors, passages = [], []
    for prefix in sorted(prefixes):
        with tf.io.gfile.GFile(prefix + ".npy", "rb") as f:
            block = np.load(io.BytesIO(f.read()))
        with tf.io.gfile.GFile(prefix + ".jsonl") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if len(rows) != len(block):
            raise ValueError(f"{prefix}: {len(rows)} passages but {len(block)} vectors")
        vectors.append(block)
        passages.extend(rows)
    return CorpusIndex(np.concatenate(vectors), passages, {p["id"]: i for i, p in enumerate(passages)})
