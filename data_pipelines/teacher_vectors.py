r"""Writes teacher vectors for Jasper/Stella distillation with any Encoder.

Embeds the query text of every training example (the text the student embeds
in `jasper_distill`) and stores the vectors by example id, as a memory-mapped
.npy that `gecko_jax.data.teacher_store.TeacherStore` reads. The examples are
those a training config reads (its `data` section), keyed as the input
pipeline keys them, so a run with `--config.data.teachers=OUTPUT` finds a
vector for every example of every batch:

    python data_pipelines/teacher_vectors.py --model=minilm \
        --config=configs/jasper_distill.py:stage1 --output=teachers/minilm

or, for JSONL files (as `--config.data.train_files`):

    python data_pipelines/teacher_vectors.py --model=minilm \
        --train_files=data/train.jsonl --output=teachers/minilm [--prompt=...] [--batch_size=64]

Run it once per teacher (e.g. `--model=minilm`, then `--model=gemma3-270m`);
training normalises each teacher, concatenates them, and normalises again.
`--config.data.FIELD=VALUE` overrides work as in launch/train.py.
"""

from absl import flags
from ml_collections import config_flags

from gecko_jax.config_base import base_config
from gecko_jax.data import teacher_store
from gecko_jax.errors import UserError
from gecko_jax.training.teacher_embedding import write_store

_MODEL = flags.DEFINE_string("model", None, "Encoder spec: minilm, st:PATH, gguf:PATH, hf:PATH, a workdir.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Training config whose data to embed: configs/NAME.py[:ARG].", lock_config=True
)
_FILES = flags.DEFINE_list(
    "train_files", None, "Training JSONL files (as data.train_files), instead of --config."
)
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the store to.")
_PROMPT = flags.DEFINE_string("prompt", None, "Prompt prepended to every text.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Texts per forward pass.")
flags.mark_flags_as_required(["model", "output"])


def _training_config():
    """The config whose data is embedded: --config, or the base one reading --train_files."""
    if (_CONFIG.value is None) == (not _FILES.value):
        raise UserError(
            "give the training data with exactly one of --config=configs/NAME.py[:ARG] "
            "and --train_files=A.jsonl,B.jsonl"
        )
    if _CONFIG.value is not None:
        return _CONFIG.value
    config = base_config()
    config.data.train_files = ",".join(_FILES.value)
    return config


def main(argv):
    del argv
    config = _training_config()
    keys, queries = teacher_store.training_queries(config.data)
    store = write_store(
        _OUTPUT.value, _MODEL.value, keys, queries, prompt=_PROMPT.value, batch_size=_BATCH.value
    )
    print(f"wrote {len(keys)} x {store.dim} teacher vectors from {_MODEL.value} to {_OUTPUT.value}")


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top

    cli.run(main)
