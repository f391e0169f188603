"""Cheap checks of the model specs FRet's flags name, before a run writes anything.

The pipeline loads its models on the workers, so a bad spec would otherwise
surface only there: amid Beam's traceback and after OUTPUT/run.json is
written. These checks read the spec and look for the file or folder it names,
without loading weights or contacting an endpoint.
"""

import tensorflow as tf

from gecko_jax.data.vocabularies import minilm_folder
from gecko_jax.errors import UserError
from gecko_jax.fret import backends
from gecko_jax.fret.stages import LLMOptions
from gecko_jax.models import gemma_import

_LLM_SPECS = "gemma3-270m, gguf:PATH, hf:PATH, openai:MODEL@BASE_URL or gemini:MODEL[@BASE_URL]"
_EMBEDDER_SPECS = ("minilm, st:PATH, gemma3-270m, gguf:PATH, hf:PATH, a sentence-transformers or "
                   "HF folder, or a training workdir")
# Spec prefixes followed by the path of a local model.
_PATH_SCHEMES = ("st", "gguf", "hf")


def _model_path(spec: str) -> str:
    """The file or folder of a local model spec (a bare spec is itself a path).

    Raises:
      UserError: a named model whose weights package is not installed.
    """
    if spec == "minilm":
        return minilm_folder()
    if spec == gemma_import.GEMMA3_270M:
        return gemma_import.gemma3_270m_path()
    scheme, colon, path = spec.partition(":")
    return path if colon and scheme in _PATH_SCHEMES else spec


def _check_exists(spec: str, kinds: str) -> None:
    path = _model_path(spec)
    if not path or not tf.io.gfile.exists(path):
        raise UserError(f"{spec!r} names no model: no file or folder {path!r}; use {kinds}")


def check_llm(options: LLMOptions) -> None:
    """Refuses an LLM spec that cannot work.

    Raises:
      UserError: an unknown or malformed spec, or a local model that is not there.
    """
    if backends.is_http_spec(options.spec):
        # Building the client checks the spec and the key; it sends nothing.
        backends.load_backend(options.spec, timeout_s=options.timeout_s,
                              max_retries=options.max_retries, concurrency=options.concurrency)
    elif gemma_import.is_gemma_spec(options.spec):
        _check_exists(options.spec, _LLM_SPECS)
    else:
        raise UserError(f"unknown LLM {options.spec!r}; use {_LLM_SPECS}")


def check_embedder(spec: str) -> None:
    """Refuses an embedder spec that names no model on disk.

    Raises:
      UserError: the spec names no file or folder.
    """
    _check_exists(spec, _EMBEDDER_SPECS)
