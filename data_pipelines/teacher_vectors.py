r"""Writes teacher vectors for Jasper/Stella distillation with any Encoder.

Embeds the query text of every training example (the text the student embeds
in `jasper_distill`) and stores the vectors by example id, as a memory-mapped
.npy that `gecko_jax.data.teacher_store.TeacherStore` reads:

    python data_pipelines/teacher_vectors.py --model=minilm \
        --train_files=data/train.jsonl --output=teachers/minilm [--prompt=...] [--batch_size=64]

Run it once per teacher (e.g. `--model=minilm`, then `--model=gemma3-270m`);
the loss normalises each teacher, concatenates them, and normalises again.
Examples without an `id` are keyed by their line number in the file
(`FILE:LINE`). Rows are written batch by batch, so a large corpus never has
to fit in memory, and the store only appears (renamed into place) once
complete.
"""

import json
import os
import shutil

from absl import flags
import numpy as np
import tqdm

from gecko_jax.data import jsonl
from gecko_jax.data import teacher_store
from gecko_jax.errors import UserError

_MODEL = flags.DEFINE_string("model", None, "Encoder spec: minilm, st:PATH, gguf:PATH, hf:PATH, a workdir.")
_FILES = flags.DEFINE_list("train_files", None, "Training JSONL files (as data.train_files).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the store to.")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt prepended to every text.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")
flags.mark_flags_as_required(["model", "train_files", "output"])


def _examples(paths):
    """(example id, query text) pairs of all files, in order."""
    for path in paths:
        for line, example in enumerate(jsonl.read_jsonl(path), start=1):
            yield str(example["id"]) if "id" in example else f"{path}:{line}", example["query"]


def main(argv):
    del argv
    from gecko_jax import Encoder  # pylint: disable=g-import-not-at-top
    pairs = list(_examples(_FILES.value))
    ids = [i for i, _ in pairs]
    if len(set(ids)) != len(ids):
        raise UserError("example ids repeat across the files; give every example a unique `id`")
    encoder = Encoder.load(_MODEL.value)
    dim = encoder.embedding_dim
    partial = _OUTPUT.value.rstrip("/") + ".partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    vectors = np.lib.format.open_memmap(os.path.join(partial, teacher_store.VECTORS_FILE),
                                        mode="w+", dtype=np.float32, shape=(len(pairs), dim))
    for start in tqdm.trange(0, len(pairs), _BATCH.value, desc="Teacher vectors", unit="batch"):
        texts = [text for _, text in pairs[start:start + _BATCH.value]]
        vectors[start:start + len(texts)] = encoder.encode(texts, prompt=_PROMPT.value)
    vectors.flush()
    with open(os.path.join(partial, teacher_store.IDS_FILE), "w", encoding="utf-8") as f:
        f.write("\n".join(ids) + "\n")
    with open(os.path.join(partial, teacher_store.META_FILE), "w") as f:
        json.dump({"model": _MODEL.value, "dim": dim, "count": len(pairs),
                   "prompt": _PROMPT.value}, f, indent=2)
    shutil.rmtree(_OUTPUT.value, ignore_errors=True)
    os.replace(partial, _OUTPUT.value)
    print(f"wrote {len(pairs)} x {dim} teacher vectors from {_MODEL.value} to {_OUTPUT.value}")


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top
    cli.run(main)
