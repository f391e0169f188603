"""An adapter that lets the `mteb` package evaluate our models.

    import mteb
    from gecko_jax import Encoder
    from gecko_jax.evaluation.mteb_adapter import MtebEncoder

    model = MtebEncoder(Encoder.load("runs/gecko_minilm"), name="runs/gecko_minilm")
    mteb.evaluate(model, mteb.get_tasks(tasks=["STSBenchmark"]))

`MtebEncoder` implements mteb's `EncoderProtocol` (mteb 2.x): `encode` gets
mteb's data loader with the task's metadata and the side (`prompt_type`
query or document), and picks the prompt from the task type and side with
`evaluation.prompts.default_prompts` for the encoder's input format. mteb
joins a retrieval document's title and text into its `text` before we see it,
so Gecko-format models get their document format only when the batch carries
the title separately (mteb's `title` and `body` columns).

The `mteb` package is needed only to run it (it is in the test extra).
"""

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from gecko_jax.evaluation.prompts import Prompts, default_prompts

# Optional: mteb is the only caller of what needs it (`mteb_model_meta`).
try:
    from mteb.models.model_meta import ModelMeta
except ImportError:
    ModelMeta = None

# mteb task types, grouped by the prompts they need.
_TASK_TYPE_TO_OURS = {
    "Retrieval": "retrieval",
    "Reranking": "retrieval",
    "InstructionRetrieval": "retrieval",
    "InstructionReranking": "retrieval",
    "STS": "sts",
    "PairClassification": "sts",
    "Summarization": "sts",
    "BitextMining": "sts",
    "Classification": "classification",
    "MultilabelClassification": "classification",
    "Clustering": "clustering",
}


class MtebEncoder:
    """mteb's encoder protocol over a `gecko_jax.Encoder` (or any `TextEncoder`).

    Attributes:
      encoder: the wrapped model.
      dim: Matryoshka prefix width, or None for the full width.
    """

    def __init__(
        self,
        encoder: Any,
        name: str = "gecko_jax",
        dim: int | None = None,
        input_format: str | None = None,
        prompts: Mapping[str, Prompts] | None = None,
    ):
        """Wraps an encoder.

        Args:
          encoder: a `gecko_jax.Encoder` or anything with its `encode` method.
          name: the model name mteb records in its results.
          dim: Matryoshka prefix width, or None for the full width.
          input_format: 'plain' or 'gecko'; default the encoder's own
            `input_format` ('plain' if it has none).
          prompts: our task type (retrieval, sts, classification, clustering)
            -> Prompts, replacing the defaults of `input_format`.
        """
        self.encoder = encoder
        self.dim = dim
        self._name = name
        self._input_format = input_format or getattr(encoder, "input_format", "plain")
        self._prompts = dict(prompts or {})

    def prompts_for(self, task_type: str) -> Prompts:
        """The prompts for an mteb task type (e.g. 'Retrieval', 'STS')."""
        ours = _TASK_TYPE_TO_OURS.get(task_type, "sts")
        return self._prompts.get(ours) or default_prompts(self._input_format, ours)

    def _texts(self, batches: Iterable[Mapping[str, Any]], prompts: Prompts, is_document: bool) -> list[str]:
        texts = []
        for batch in batches:
            if is_document and "body" in batch and prompts.doc_format != "{title} {text}":
                titles = batch.get("title") or [""] * len(batch["body"])
                texts += [
                    prompts.doc_format.format(title=title or prompts.missing_title, text=body).strip()
                    for title, body in zip(titles, batch["body"])
                ]
            else:
                texts += list(batch["text"])
        return texts

    def encode(
        self,
        inputs: Iterable[Mapping[str, Any]],
        *,
        task_metadata: Any,
        hf_split: str,
        hf_subset: str,
        prompt_type: Any = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embeds mteb's batches of texts.

        Args:
          inputs: mteb's data loader: batches with a `text` list (documents
            also carry `body` and, when they have one, `title`).
          task_metadata: the task's metadata; its `type` picks the prompts.
          hf_split: unused (the split being evaluated).
          hf_subset: unused (the language subset).
          prompt_type: mteb's PromptType (query or document) or None for
            symmetric tasks.
          **kwargs: mteb's encode options (batch_size, ...); batch_size is used.

        Returns:
          float32 [num_texts, dim].
        """
        del hf_split, hf_subset
        prompts = self.prompts_for(task_metadata.type)
        is_document = str(getattr(prompt_type, "value", prompt_type)) == "document"
        texts = self._texts(inputs, prompts, is_document)
        prompt = prompts.document if is_document else prompts.query
        return np.asarray(
            self.encoder.encode(texts, prompt=prompt, dim=self.dim, batch_size=kwargs.get("batch_size")),
            dtype=np.float32,
        )

    def similarity(self, embeddings1, embeddings2) -> np.ndarray:
        """Cosine similarity of every row of the first to every row of the second."""
        a, b = _unit_rows(embeddings1), _unit_rows(embeddings2)
        return a @ b.T

    def similarity_pairwise(self, embeddings1, embeddings2) -> np.ndarray:
        """Cosine similarity of each row of the first with the same row of the second."""
        return np.sum(_unit_rows(embeddings1) * _unit_rows(embeddings2), axis=1)

    @property
    def mteb_model_meta(self):
        """mteb's description of the model (its name; cosine similarity)."""
        return ModelMeta.create_empty(overwrites={"name": self._name, "similarity_fn_name": "cosine"})


def _unit_rows(embeddings) -> np.ndarray:
    rows = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
