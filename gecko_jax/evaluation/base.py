"""What the evaluators need from a model, and the one way they call it.

The evaluators are written against `TextEncoder`, a structural protocol, rather
than `gecko_jax.encoder.Encoder`, so that they can be tested with a fake encoder
and used with any model that offers the same `encode` method.
"""

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TextEncoder(Protocol):
    """Anything that turns texts into one embedding row per text."""

    def encode(
        self,
        texts: Sequence[str],
        prompt: str | None = None,
        dim: int | None = None,
        batch_size: int | None = None,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Embeds `texts`.

        Args:
          texts: the texts to embed.
          prompt: an instruction prefix (e.g. `task: search result | query: `),
            or None for none.
          dim: keep only the first `dim` coordinates (Matryoshka prefix), or
            None for the full width.
          batch_size: texts per forward pass, or None for the encoder's default.
          show_progress: whether to draw a progress bar on stderr.

        Returns:
          float32 array [len(texts), D].
        """


def encode_normalized(
    encoder: TextEncoder,
    texts: Sequence[str],
    prompt: str | None = None,
    dim: int | None = None,
    batch_size: int | None = None,
    show_progress: bool = False,
) -> np.ndarray:
    """Calls `encoder.encode` and returns unit-length float32 rows.

    The rows are normalised again here because cosine similarity must not depend
    on the encoder having done it (a Matryoshka prefix of a unit vector is not a
    unit vector, and a third-party encoder may not normalise at all).

    Args:
      encoder: the model.
      texts: the texts to embed.
      prompt: passed to `encoder.encode`.
      dim: passed to `encoder.encode`.
      batch_size: passed to `encoder.encode`.
      show_progress: passed to `encoder.encode`.

    Returns:
      float32 array [len(texts), D] whose non-zero rows have L2 norm 1.

    Raises:
      ValueError: the encoder returned an array of the wrong shape; that is a
        bug in the encoder, not something the user can fix.
    """
    embeddings = np.asarray(
        encoder.encode(
            list(texts),
            prompt=prompt,
            dim=dim,
            batch_size=batch_size,
            show_progress=show_progress,
        ),
        dtype=np.float32,
    )
    if embeddings.ndim != 2 or embeddings.shape[0] != len(texts):
        raise ValueError(
            f"encoder returned shape {embeddings.shape} for {len(texts)} texts; expected [num_texts, dim]"
        )
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    # An all-zero row stays zero (similarity 0 to everything) instead of NaN.
    return embeddings / np.maximum(norms, np.float32(1e-12))
