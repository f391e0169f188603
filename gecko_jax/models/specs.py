"""One rule for what a model spec names, used wherever a model is loaded.

`Encoder.load`, export, the trainer's `model.init` and FRet's check of its
embedder accept the same specs and tell them apart the same way, in this
order:

1. `minilm` or `st:PATH`: a sentence-transformers (BERT) model;
2. a folder holding a Gemma checkpoint (an HF Gemma 3 folder, an exported or
   EmbeddingGemma folder), or `hf:PATH`, `gguf:PATH`, `gemma3-270m`: Gemma;
3. a folder holding `modules.json`, or an HF `config.json` (one that names
   its `model_type`): a sentence-transformers or HF BERT folder;
4. a folder (local or gs://) holding a training run's `config.json`: a
   training workdir, read from its newest checkpoint.

The file or folder a prefixed spec names must be there, and a packaged
model's package installed. Anything else is refused with one message that
lists the forms. `resolve_gemma` takes the Gemma checkpoints alone, for
`LanguageModel.load` and FRet's LLM.
"""

import dataclasses
import json
import os

import tensorflow as tf

from gecko_jax.errors import UserError
from gecko_jax.models import gemma_import
from gecko_jax.pretrained_packages import gemma3_270m_path, minilm_folder

SENTENCE_TRANSFORMERS = "sentence-transformers"
GEMMA = "gemma"
BERT_FOLDER = "bert-folder"
WORKDIR = "workdir"

SPEC_HELP = (
    "use 'minilm', 'st:PATH' (a sentence-transformers or HF BERT folder), 'gguf:PATH', "
    "'hf:PATH' (an HF Gemma folder), 'gemma3-270m', a sentence-transformers folder or a "
    "training workdir"
)
GEMMA_HELP = "use 'gemma3-270m', 'gguf:PATH' (a .gguf file), 'hf:PATH' or an HF Gemma folder"

# What each other kind is, in the refusal of a spec where a language model is needed.
_NOT_A_LANGUAGE_MODEL = {
    SENTENCE_TRANSFORMERS: "a sentence-transformers (BERT) model",
    BERT_FOLDER: "a sentence-transformers or HF BERT folder",
    # Its checkpoint holds an embedding tower trained as an encoder, not a
    # Gemma checkpoint to read cheaply.
    WORKDIR: "a training workdir",
}


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


def _there(spec: str, path: str, forms: str, folder: bool = True) -> str:
    """`path`, the local folder (or file) that `spec` names, refused where it is not there."""
    if not (os.path.isdir(path) if folder else os.path.isfile(path)):
        raise UserError(f"Model {spec!r}: no {'folder' if folder else 'file'} {path!r}; {forms}.")
    return path


def resolve(spec: str, forms: str = SPEC_HELP) -> ModelSpec:
    """Tells what `spec` names (see the module docstring); reads no weights.

    Args:
      spec: the model spec.
      forms: what a refusal tells the user to pass; a caller that takes fewer
        forms names its own.

    Returns:
      The `ModelSpec`.

    Raises:
      UserError: the spec names none of the accepted forms, a file or folder
        that is not there, or a packaged model whose package is missing.
    """
    if spec == "minilm":
        minilm_folder()  # Raises the pip command when the package is missing.
        return ModelSpec(SENTENCE_TRANSFORMERS, spec, "")
    if spec.startswith("st:") and len(spec) > 3:
        return ModelSpec(SENTENCE_TRANSFORMERS, spec, _there(spec, spec[3:], forms))
    if os.path.isdir(spec) and gemma_import.is_gemma_folder(spec):
        spec = f"hf:{spec}"
    if spec == gemma_import.GEMMA3_270M:
        # Raises the pip command when the package is missing; assembles the
        # file once, which every load of it does first anyway.
        gemma3_270m_path()
        return ModelSpec(GEMMA, spec, "")
    if gemma_import.is_gemma_spec(spec) and spec.startswith("gguf:"):
        _there(spec, spec[len("gguf:") :], forms, folder=False)
        return ModelSpec(GEMMA, spec, "")
    if gemma_import.is_gemma_spec(spec):
        return ModelSpec(GEMMA, spec, _there(spec, spec[len("hf:") :], forms))
    if os.path.isdir(spec) and is_hf_bert_folder(spec):
        return ModelSpec(BERT_FOLDER, spec, spec)
    if spec and tf.io.gfile.exists(os.path.join(spec, "config.json")):
        return ModelSpec(WORKDIR, spec, spec)
    raise UserError(f"Unknown model {spec!r}; {forms}.")


def resolve_gemma(spec: str, forms: str = GEMMA_HELP) -> ModelSpec:
    """Like `resolve`, for a Gemma language model: refuses the other kinds.

    Args:
      spec: the model spec.
      forms: what a refusal tells the user to pass.

    Returns:
      The `ModelSpec`, of kind GEMMA.

    Raises:
      UserError: what `resolve` refuses, or a spec of another kind.
    """
    model = resolve(spec, forms)
    if model.kind != GEMMA:
        raise UserError(
            f"Model {spec!r} is {_NOT_A_LANGUAGE_MODEL[model.kind]}, not a Gemma language model; {forms}."
        )
    return model
