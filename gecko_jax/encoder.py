"""`Encoder`: texts in, embeddings out, for any tower this project can load.

    from gecko_jax import Encoder
    vectors = Encoder.load("minilm").encode(["a sentence"], dim=256)

A multi-vector (XTR) tower gives one unit vector per token instead:
`encode_tokens` returns them, padding left out. A multi-vector tower with
AligneR's salience heads also weighs each token: `encode_tokens_and_saliences`
returns the vectors with the query or the document saliences.

Texts are tokenized in Python, sorted by length and packed into batches of a
fixed size whose length is the smallest bucket that holds the batch's
longest text (8, 16, 24, ... 96, 128, ... up to `max_length`; see
`data.packing.length_buckets`); the jitted forward pass therefore compiles
once per bucket and short texts stay cheap. Results come
back in input order. A progress bar on stderr follows encodes of many batches.
"""

import functools
import os
import sys
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from flax import linen as nn

from gecko_jax import checkpoint_io
from gecko_jax.data import packing
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError
from gecko_jax.export.source import folder_input_format
from gecko_jax.models import gemma_import
from gecko_jax.models import salience
from gecko_jax.models import specs
from gecko_jax.models.bert_import import ImportedModel, load_bert_folder, resolve_pretrained
from gecko_jax.models.registry import build_tower
from gecko_jax.models.tower import truncate_and_normalize
from gecko_jax.text_inputs import check_texts

# With `show_progress=None`, encodes of at least this many batches draw a
# progress bar; shorter ones finish too fast for one to help.
_PROGRESS_MIN_BATCHES = 20


class Encoder:
    """Embeds texts with a tower and its parameters.

    Attributes:
      tower: the Flax module, called as `tower.apply({'params': params}, ids,
        mask)` and returning [B, D] (or [B, L, d] token vectors).
      params: its parameters (unboxed).
      vocabulary: the seqio vocabulary that tokenizes texts for it.
      max_length: tokens per text, bos and eos included; longer texts are cut.
      batch_size: default texts per forward pass.
      input_format: how the model was trained to see texts: 'gecko' (task
        and title prompts, `gecko_jax.data.formats`) or 'plain' (bare text);
        evaluation picks its default prompts by it.
    """

    def __init__(
        self,
        tower: nn.Module,
        params: Any,
        vocabulary: Any,
        max_length: int,
        batch_size: int = 64,
        input_format: str = "plain",
        mesh: jax.sharding.Mesh | None = None,
    ):
        """Wraps a tower.

        Args:
          tower: a module with the `EmbeddingTower` call signature.
          params: its parameters; numpy leaves are put on device once.
          vocabulary: a seqio vocabulary with bos/eos/pad ids.
          max_length: sequence length, bos and eos included.
          batch_size: default batch size of `encode`.
          input_format: see the class docstring.
          mesh: the mesh `params` are sharded over, if they are (evaluation
            during training, on one host or several). The embeddings are then
            replicated over it, so that every host can read them all.
        """
        if not _is_int(batch_size) or batch_size < 1:
            raise UserError(f"batch_size must be a positive integer; got {batch_size!r}.")
        self.tower = tower
        self.params = jax.tree.map(jnp.asarray, params)
        self.vocabulary = vocabulary
        self.max_length = max_length
        self.batch_size = batch_size
        self.input_format = input_format
        self._buckets = packing.length_buckets(max_length)
        replicated = None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        self._apply = jax.jit(
            lambda p, ids, mask: tower.apply({"params": p}, ids, mask), out_shardings=replicated
        )

    @classmethod
    def load(cls, spec: str, batch_size: int = 64) -> "Encoder":
        """Loads the model named by `spec`.

        Args:
          spec: 'minilm', 'st:PATH', a sentence-transformers / HF BERT folder,
            a Gemma checkpoint ('gguf:PATH', 'hf:PATH', 'gemma3-270m'; the
            bidirectional mean-pooled tower, with EmbeddingGemma's dense
            head where the folder has one), or a training workdir (its
            config.json and latest checkpoint).
          batch_size: default batch size of `encode`.

        Returns:
          The `Encoder`.

        Raises:
          UserError: unknown spec or unreadable model.
        """
        model = specs.resolve(spec)
        if model.kind == specs.SENTENCE_TRANSFORMERS:
            return cls._from_imported(resolve_pretrained(model.spec), batch_size, model.folder)
        if model.kind == specs.GEMMA:
            return cls._from_imported(
                gemma_import.to_imported_model(gemma_import.load_checkpoint(model.spec)),
                batch_size,
                model.folder,
            )
        if model.kind == specs.BERT_FOLDER:
            return cls._from_imported(load_bert_folder(model.folder), batch_size, model.folder)
        config, params = checkpoint_io.restore_params(model.folder)
        return cls(
            build_tower(config.model),
            params,
            get_vocabulary(config.model.vocab),
            max_length=config.data.max_length,
            batch_size=batch_size,
            input_format=config.data.get("format", "plain"),
        )

    @classmethod
    def _from_imported(cls, imported: ImportedModel, batch_size: int, folder: str) -> "Encoder":
        """An imported model; `folder` (if a folder) tells its input format.

        A folder exported from a run in Gecko's format keeps that format, so
        evaluation gives it Gecko's prompts as it does the run's workdir.
        """
        config = imported.model_config
        input_format = folder_input_format(folder) if os.path.isdir(folder) else "plain"
        return cls(
            build_tower(config),
            imported.params,
            get_vocabulary(config.vocab),
            imported.max_length,
            batch_size=batch_size,
            input_format=input_format,
        )

    @functools.cached_property
    def embedding_dim(self) -> int:
        """Width D of the full embeddings."""
        ids = jax.ShapeDtypeStruct((1, self._buckets[0]), jnp.int32)
        out = jax.eval_shape(self._apply, self.params, ids, ids)
        return out.shape[-1]

    @property
    def multi_vector_dim(self) -> int:
        """Width d of the token vectors of a multi-vector tower; 0 if pooled."""
        return getattr(self.tower, "multi_vector_dim", 0)

    @property
    def has_saliences(self) -> bool:
        """Whether the tower weighs its token vectors by AligneR's saliences."""
        return getattr(self.tower, "saliences", None) is not None

    def encode(
        self,
        texts: Sequence[str],
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> np.ndarray:
        """Embeds texts, in order.

        Args:
          texts: non-empty strings.
          prompt: prepended verbatim to every text (e.g. 'query: '), or None.
          dim: keep the first `dim` coordinates (Matryoshka prefix); None or 0
            keeps all. If the tower L2-normalises, the prefix is normalised
            again; otherwise it is returned as is.
          batch_size: texts per forward pass; None uses `self.batch_size`.
          show_progress: draw a progress bar over batches on stderr: True
            always, False never, None when there are many batches.

        Returns:
          float32 [len(texts), dim or D].

        Raises:
          UserError: a text is empty or not a str, `dim` is out of range, or
            the tower is multi-vector.
        """
        if self.multi_vector_dim:
            raise UserError(
                f"this model gives token vectors (model.multi_vector_dim="
                f"{self.multi_vector_dim}); embed with Encoder.encode_tokens"
            )
        texts = self._check(texts, prompt, dim, batch_size)
        out = np.zeros((len(texts), self.embedding_dim), np.float32)
        for rows, vectors, _ in self._batches(texts, prompt, batch_size, show_progress):
            out[rows] = vectors
        if dim:
            out = out[:, :dim]
            if getattr(self.tower, "normalize", False):
                out = np.asarray(truncate_and_normalize(out, None))
        return out

    def encode_tokens(
        self,
        texts: Sequence[str],
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> list[np.ndarray]:
        """Token vectors of a multi-vector tower, in order; arguments as `encode`.

        Returns:
          One float32 [n_i, dim or d] array per text: a row for each of its
          tokens (bos and eos included, padding left out), Matryoshka prefixes
          normalised again if the tower L2-normalises; a salience tower's
          saliences are left out.

        Raises:
          UserError: a text is empty or not a str, `dim` is out of range, or
            the tower pools one vector per text.
        """
        return self._token_outputs(texts, prompt, dim, batch_size, show_progress)[0]

    def encode_tokens_and_saliences(
        self,
        texts: Sequence[str],
        side: str,
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool | None = None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Token vectors and saliences of a tower with salience heads, in order.

        Args:
          texts, prompt, dim, batch_size, show_progress: as `encode_tokens`.
          side: 'query' for the query head's saliences u^q, 'document' for u^d.

        Returns:
          (vectors, saliences): per text, float32 [n_i, dim or d] as
          `encode_tokens` gives them and float32 [n_i] saliences.

        Raises:
          UserError: as `encode_tokens`, or the tower has no salience heads.
        """
        if not self.has_saliences:
            raise UserError(
                "this model has no salience heads (model.salience_heads); embed with Encoder.encode_tokens"
            )
        if side not in ("query", "document"):
            raise ValueError(f"side must be 'query' or 'document', got {side!r}")
        vectors, rest = self._token_outputs(texts, prompt, dim, batch_size, show_progress)
        channel = salience.QUERY_CHANNEL if side == "query" else salience.DOC_CHANNEL
        return vectors, [r[:, channel] for r in rest]

    def _token_outputs(self, texts, prompt, dim, batch_size, show_progress):
        """Per text, the [n_i, dim or d] token vectors and the [n_i, c] channels after them."""
        if not self.multi_vector_dim:
            raise UserError("this model gives one vector per text; embed with Encoder.encode")
        texts = self._check(texts, prompt, dim, batch_size)
        width = self.multi_vector_dim
        vectors, rest = [None] * len(texts), [None] * len(texts)
        for rows, outputs, mask in self._batches(texts, prompt, batch_size, show_progress):
            for row, row_outputs, row_mask in zip(rows, outputs, mask):
                real = row_outputs[row_mask.astype(bool)]
                vectors[row], rest[row] = real[:, : dim or width], real[:, width:]
        if dim and getattr(self.tower, "normalize", False):
            vectors = [np.asarray(truncate_and_normalize(v, None)) for v in vectors]
        return vectors, rest

    def _check(
        self, texts: Sequence[str], prompt: str | None, dim: int | None, batch_size: int | None
    ) -> list[str]:
        texts = check_texts(texts)
        if prompt is not None and not isinstance(prompt, str):
            raise UserError(f"prompt must be a string or None; got {type(prompt).__name__}.")
        # A salience tower's output has two channels after its token vectors.
        width = self.multi_vector_dim or self.embedding_dim
        if dim is not None and (not _is_int(dim) or not 0 <= dim <= width):
            raise UserError(f"dim must be an integer between 1 and {width} (or None for all); got {dim!r}.")
        if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
            raise UserError(
                f"batch_size must be a positive integer (or None for {self.batch_size}); got {batch_size!r}."
            )
        return texts

    def _batches(self, texts, prompt, batch_size, show_progress):
        """Yields (input rows, tower outputs, masks) per batch, longest first."""
        batch_size = batch_size or self.batch_size
        prompt = prompt or ""
        vocab = self.vocabulary
        # Cut now so that the bucket reflects the packed length.
        tokens = [list(vocab.encode(prompt + t))[: self.max_length - 2] for t in texts]
        # Longest first, so that a batch too big for memory fails at once.
        order = sorted(range(len(texts)), key=lambda i: -len(tokens[i]))
        starts = range(0, len(texts), batch_size)
        if show_progress is None:
            show_progress = len(starts) >= _PROGRESS_MIN_BATCHES
        for start in tqdm.tqdm(
            starts, desc="Encoding", unit="batch", file=sys.stderr, disable=not show_progress
        ):
            rows = order[start : start + batch_size]
            longest = len(tokens[rows[0]]) + 2
            length = packing.bucket_length(longest, self._buckets)
            # Empty filler rows keep the batch shape, and the compilation, fixed.
            batch = [tokens[i] for i in rows] + [[]] * (batch_size - len(rows))
            ids, mask = packing.pack(batch, length, vocab.bos_id, vocab.eos_id, vocab.pad_id)
            outputs = np.asarray(self._apply(self.params, ids, mask))
            yield rows, outputs[: len(rows)], mask[: len(rows)]


def _is_int(value) -> bool:
    # bool is an int subclass, but dim=True is a mistake, not 1.
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
