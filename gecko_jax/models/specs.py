"""One rule for what a model spec names, used wherever a model is loaded.

`Encoder.load`, export, and the trainer's `model.init` accept the same specs
and tell them apart the same way, in this order:

1. `minilm` or `st:PATH`: a sentence-transformers (BERT) model;
2. a folder holding a Gemma checkpoint (an HF Gemma 3 folder, an exported or
   EmbeddingGemma folder), or `hf:PATH`, `gguf:PATH`, `gemma3-270m`: Gemma;
3. a folder holding `modules.json`, or an HF `config.json` (one that names
   its `model_type`): a sentence-transformers or HF BERT folder;
4. a folder (local or gs://) holding a training run's `config.json`: a
   training workdir, read from its newest checkpoint.

Anything else is refused with one message that lists the forms.
"""

import dataclasses
import json
import os

import tensorflow as tf

from gecko_jax.errors import UserError
from gecko_jax.models import gemma_import

SENTENCE_TRANSFORMERS = "sentence-transformers"
GEMMA = "gemma"
BERT_FOLDER = "bert-folder"
WORKDIR = "workdir"

SPEC_HELP = ("use 'minilm', 'st:PATH' (a sentence-transformers or HF BERT folder), 'gguf:PATH', "
             "'hf:PATH' (an HF Gemma folder), 'gemma3-270m', a sentence-transformers folder or a "
             "training workdir")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a spec names.

    Attributes:
        kind: SENTENCE_TRANSFORMERS, GEMMA, BERT_FOLDER or WORKDIR.
        spec: the spec to load it by; a Gemma folder given bare becomes `hf:FOLDER`.
        folder: the folder it is read from, where it is one ('' for packaged
            models and GGUF files).
    """

    kind: str
    spec: str
    folder: str


def is_hf_bert_folder(path: str) -> bool:
    """Whether `path` is a sentence-transformers folder or an HF folder (not a training workdir)."""
    if os.path.exists(os.path.join(path, "modules.json")):
        return True
    config = os.path.join(path, "config.json")
    try:
        with open(config, encoding="utf-8") as f:
            # An HF config names its model_type; the trainer's does not.
            return "model_type" in json.load(f)
    except (OSError, ValueError):
        return False  # Not ours to diagnose: the workdir reader says why.


def resolve(spec: str) -> ModelSpec:
    """Tells what `spec` names (see the module docstring); reads no weights.

    Raises:
        UserError: the spec names none of the accepted forms.
    """
    if spec == "minilm" or (spec.startswith("st:") and len(spec) > 3):
        return ModelSpec(SENTENCE_TRANSFORMERS, spec, spec.removeprefix("st:") if spec != "minilm" else "")
    if os.path.isdir(spec) and gemma_import.is_gemma_folder(spec):
        spec = f"hf:{spec}"
    if gemma_import.is_gemma_spec(spec):
        return ModelSpec(GEMMA, spec, spec[3:] if spec.startswith("hf:") else "")
    if os.path.isdir(spec) and is_hf_bert_folder(spec):
        return ModelSpec(BERT_FOLDER, spec, spec)
    if spec and tf.io.gfile.exists(os.path.join(spec, "config.json")):
        return ModelSpec(WORKDIR, spec, spec)
    raise UserError(f"Unknown model {spec!r}; {SPEC_HELP}.")
