"""Teacher vectors from an `Encoder`, written as a `data.teacher_store` folder.

Jasper/Stella distil from teachers' embeddings of the training queries. This
runs a teacher over them once: `data_pipelines/teacher_vectors.py` for a
store to reuse across runs, and `teacher_batches` for a teacher the config
names by its Encoder spec.
"""

import json
import os
import shutil
from typing import Sequence

import numpy as np
import tqdm

from gecko_jax.data.teacher_store import IDS_FILE, META_FILE, VECTORS_FILE, TeacherStore
from gecko_jax.encoder import Encoder


def write_store(
    folder: str,
    model_spec: str,
    keys: Sequence[str],
    texts: Sequence[str],
    prompt: str | None = None,
    batch_size: int = 64,
) -> TeacherStore:
    """Embeds `texts` with an Encoder and writes them as a store keyed by `keys`.

    Rows are written batch by batch into a memory map, so a large corpus never
    has to fit in memory, and the store only appears (renamed into place) once
    complete; a progress bar counts the batches.

    Args:
      folder: where the store goes (replaced if present).
      model_spec: any `Encoder.load` spec.
      keys: one `example_key` per text.
      texts: the texts to embed.
      prompt: prepended to every text.
      batch_size: texts per forward pass.

    Returns:
      The written store.
    """
    encoder = Encoder.load(model_spec)
    dim = encoder.embedding_dim
    partial = folder.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    vectors = np.lib.format.open_memmap(
        os.path.join(partial, VECTORS_FILE), mode="w+", dtype=np.float32, shape=(len(texts), dim)
    )
    for start in tqdm.trange(0, len(texts), batch_size, desc=f"Teacher vectors ({model_spec})", unit="batch"):
        chunk = list(texts[start : start + batch_size])
        vectors[start : start + len(chunk)] = encoder.encode(chunk, prompt=prompt)
    vectors.flush()
    del vectors
    with open(os.path.join(partial, IDS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(keys) + "\n")
    with open(os.path.join(partial, META_FILE), "w") as f:
        json.dump({"model": model_spec, "dim": dim, "count": len(texts), "prompt": prompt}, f, indent=2)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(partial, folder)
    return TeacherStore(folder)
