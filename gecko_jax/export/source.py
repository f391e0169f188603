"""What an export reads from a model spec: architecture, weights and prompts.

Every spec `Encoder.load` takes is accepted: a training workdir (its newest
checkpoint), `minilm`, `st:PATH`, a sentence-transformers / HF folder, and the
Gemma specs (`gguf:PATH`, `hf:PATH`, `gemma3-270m`).
"""

import dataclasses
import json
import os
from typing import Any

import ml_collections

from gecko_jax import checkpoint_io
from gecko_jax.data import formats
from gecko_jax.errors import UserError
from gecko_jax.models import gemma_import
from gecko_jax.models import specs
from gecko_jax.models.bert_import import ImportedModel, load_bert_folder, resolve_pretrained
from gecko_jax.pretrained_packages import minilm_folder

# The sentence-transformers file that holds a model's prompts.
ST_CONFIG_FILE = "config_sentence_transformers.json"
# Gecko's generic retrieval task string, used when a run names none.
_RETRIEVAL_TASK = "search result"
_STS_TASK = "semantic similarity"


@dataclasses.dataclass(frozen=True)
class ExportSource:
    """A model ready to be written out.

    Attributes:
      model_config: the `config.model` section of the tower.
      params: its parameter tree (numpy or jax leaves).
      max_length: tokens per text, bos and eos included.
      prompts: prompt name -> prefix, as sentence-transformers stores them.
    """

    model_config: ml_collections.ConfigDict
    params: dict[str, Any]
    max_length: int
    prompts: dict[str, str]


def folder_prompts(folder: str) -> dict[str, str]:
    """The prompts a sentence-transformers folder carries (none if absent)."""
    path = os.path.join(folder, ST_CONFIG_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        try:
            prompts = json.load(f).get("prompts") or {}
        except (ValueError, AttributeError) as e:
            raise UserError(f"{path} is not a JSON object ({e}); fix or delete it.") from e
    return {str(name): str(text) for name, text in prompts.items()}


def folder_input_format(folder: str) -> str:
    """'gecko' for a folder exported from a run in Gecko's format, else 'plain'.

    Such an export carries the document prompt `title: none | text: `
    (`workdir_prompts`), which no other prompt set writes.
    """
    gecko = folder_prompts(folder).get("document") == formats.gecko_document("")
    return "gecko" if gecko else "plain"


def workdir_prompts(config: ml_collections.ConfigDict) -> dict[str, str]:
    """The prompts a training run used, by sentence-transformers name.

    A run in Gecko's format saw `task: {task} | query: {text}` queries and
    `title: {title} | text: {text}` documents; the config's `export` prompts,
    where set, say which task strings to export.

    Args:
      config: the run's config.

    Returns:
      'query', 'document' and 'STS' prompts for the gecko format; for the
      plain format only the `export` prompts the config sets.
    """
    prompts = {}
    if config.data.format == "gecko":
        prompts = {
            "query": formats.gecko_query(_RETRIEVAL_TASK, ""),
            "document": formats.gecko_document(""),
            "STS": formats.gecko_query(_STS_TASK, ""),
        }
    if config.export.query_prompt:
        prompts["query"] = config.export.query_prompt
    if config.export.sts_prompt:
        prompts["STS"] = config.export.sts_prompt
    return prompts


def _from_imported(imported: ImportedModel, folder: str) -> ExportSource:
    return ExportSource(imported.model_config, imported.params, imported.max_length, folder_prompts(folder))


def load_source(spec: str) -> ExportSource:
    """Reads the model named by `spec`.

    Args:
      spec: any model spec `Encoder.load` accepts.

    Returns:
      The `ExportSource`.

    Raises:
      UserError: unknown spec or unreadable model.
    """
    model = specs.resolve(spec)
    if model.kind == specs.SENTENCE_TRANSFORMERS:
        return _from_imported(resolve_pretrained(model.spec), model.folder or minilm_folder())
    if model.kind == specs.GEMMA:
        imported = gemma_import.to_imported_model(gemma_import.load_checkpoint(model.spec))
        if not model.spec.startswith("hf:"):
            return ExportSource(imported.model_config, imported.params, imported.max_length, {})
        return _from_imported(imported, model.folder)
    if model.kind == specs.BERT_FOLDER:
        return _from_imported(load_bert_folder(model.folder), model.folder)
    config, params = checkpoint_io.restore_params(model.folder)
    return ExportSource(config.model, params, config.data.max_length, workdir_prompts(config))
