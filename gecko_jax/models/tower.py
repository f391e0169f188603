"""An embedding tower: backbone, pooling, optional projection and L2 norm.

The backbone is any module called as `backbone(input_ids, attention_mask,
deterministic=...) -> [B, L, H]`, so BERT and Gemma towers share everything
after the hidden states. Sequences are right-padded (see `data.packing`).
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

from gecko_jax.errors import UserError

POOLINGS = ("mean", "cls", "last")
# Guards the norm of an all-zero vector, as torch.nn.functional.normalize does.
_NORM_EPS = 1e-12


def l2_normalize(x: jax.Array) -> jax.Array:
    """Scales each row of `x` to unit L2 norm (zero rows stay zero).

    The clamp sits on the squared norm, not on `linalg.norm`, because the
    gradient of a square root at zero is NaN; an all-padding row (an example
    without a hard negative) pools to zero and must not poison the step.
    """
    squared = jnp.sum(jnp.square(x), axis=-1, keepdims=True)
    return x * jax.lax.rsqrt(jnp.maximum(squared, _NORM_EPS * _NORM_EPS))


def truncate_and_normalize(embeddings: jax.Array, dim: int | None) -> jax.Array:
    """Returns the L2-normalised Matryoshka prefix of each embedding.

    Args:
      embeddings: [..., D] embeddings (normalised or not).
      dim: prefix length; None or 0 keeps all D coordinates.

    Returns:
      [..., dim] unit-norm rows.
    """
    if dim:
        embeddings = embeddings[..., :dim]
    return l2_normalize(embeddings)


def pool(hidden: jax.Array, mask: jax.Array, pooling: str) -> jax.Array:
    """Pools [B, L, H] hidden states to [B, H].

    Args:
      hidden: hidden states.
      mask: [B, L], 1 for real tokens and 0 for right padding.
      pooling: 'mean' (over real tokens), 'cls' (first token) or 'last' (last
        real token).

    Returns:
      [B, H] in the dtype of `hidden`.

    Raises:
      UserError: unknown pooling.
    """
    if pooling == "mean":
        weights = mask.astype(hidden.dtype)[..., None]
        total = jnp.sum(hidden * weights, axis=1)
        # An all-padding row divides by a tiny count, giving zeros, not NaN.
        return total / jnp.maximum(jnp.sum(weights, axis=1), 1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        # Position of the last 1 in the mask, robust to masks with holes.
        length = mask.shape[1]
        last = length - 1 - jnp.argmax(mask[:, ::-1], axis=1)
        return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]
    raise UserError(f"Unknown pooling {pooling!r}; use one of {POOLINGS}.")


class EmbeddingTower(nn.Module):
    """Turns token ids into one float32 embedding per sequence, or one per token.

    Attributes:
      backbone: the sequence encoder; its parameters live under 'backbone'.
      pooling: one of `POOLINGS` (single-vector towers only).
      projection_dim: width of a bias-free dense head after pooling, kernel
        axes ('embed', 'mlp'); 0 for no head.
      normalize: whether to L2-normalise the output (each token vector, for a
        multi-vector tower).
      multi_vector_dim: width of the per-token head of a multi-vector
        (XTR / ColBERT-style) tower: every token state goes through a
        bias-free dense layer 'multi_vector' to this width instead of being
        pooled, and padding positions are zero. 0 = one pooled vector.
      saliences: AligneR's salience heads (`salience.SalienceHeads`) of a
        multi-vector tower, or None: their u^q and u^d are appended to each
        token vector as two more channels (`salience.split_saliences`).
    """

    backbone: nn.Module
    pooling: str = "mean"
    projection_dim: int = 0
    normalize: bool = True
    multi_vector_dim: int = 0
    saliences: nn.Module | None = None

    @nn.compact
    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """Embeds a batch.

        Args:
          input_ids: int32 [B, L].
          attention_mask: int32 [B, L].
          deterministic: disables dropout in the backbone.

        Returns:
          float32 [B, D], D = projection_dim or the backbone width; for a
          multi-vector tower float32 [B, L, multi_vector_dim], plus two
          salience channels with `saliences`.
        """
        hidden = self.backbone(input_ids, attention_mask, deterministic=deterministic)
        if self.multi_vector_dim:
            return self._token_vectors(hidden, attention_mask)
        # Pool in float32: a bf16 sum over hundreds of tokens loses digits.
        x = pool(hidden.astype(jnp.float32), attention_mask, self.pooling)
        if self.projection_dim:
            x = nn.Dense(
                self.projection_dim,
                use_bias=False,
                param_dtype=jnp.float32,
                name="projection",
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
            )(x)
        if self.normalize:
            x = l2_normalize(x)
        return x

    def _token_vectors(self, hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
        """[B, L, H] states -> [B, L, multi_vector_dim] token vectors, padding zeroed."""
        x = nn.Dense(
            self.multi_vector_dim,
            use_bias=False,
            param_dtype=jnp.float32,
            name="multi_vector",
            kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp")),
        )(hidden.astype(jnp.float32))
        if self.normalize:
            x = l2_normalize(x)
        # Zero padding rows so that sums over tokens need no mask and padding
        # gets no gradient; losses still mask it where a zero could score.
        x = x * attention_mask[..., None].astype(x.dtype)
        if self.saliences is not None:
            x = jnp.concatenate([x, self.saliences(hidden, attention_mask)], axis=-1)
        return x
