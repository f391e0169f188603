"""Losses chosen by `loss.name`; gin may swap in any function of the same shape.

A training loss maps (embeddings by text field, batch) to a scalar, where the
embeddings are [global_batch, D] (per-token [global_batch, L, d] for `xtr`)
and the batch holds the token arrays and flags (`has_negative`) of the same
examples. The adapters below read these batch keys besides the token arrays:

  * gecko:          `has_negative` [B].
  * gemini_nce:     `has_negative` [B]; optional `query_hash`, `positive_hash`,
                    `example_id` [B] int32 for the false-negative mask (see
                    losses.gemini_nce). Without them only j = i is masked.
  * jasper_distill: `teacher` [B, T] float, the teachers' vectors side by side
                    (blocks of `loss.jasper_teacher_dims`), or one combined
                    unit target as `training.teacher_batches` attaches it; the
                    student is the `query` embedding.
  * xtr:            `query_mask`, `positive_mask`, `negative_mask` [B, L] and
                    `has_negative` [B].
  * aligner:        as xtr; its embeddings are [B, L, d + 2], token vectors
                    and the saliences u^q, u^d of a tower with salience heads
                    (models.salience).

Each builder returns a `losses.loss.Loss`: the function and the text fields it
reads, the only ones the train step embeds (jasper_distill: the query).
`check_tower_for_loss` refuses a loss and tower that do not fit together.

`loss.mrl_dims` / `loss.mrl_weights` apply to every loss through the
Matryoshka wrapper (jasper_distill: to L_sim and L_resim only, see
losses.jasper; aligner: to the token vectors, not the saliences);
`loss.spread_out_weight` adds EmbeddingGemma's regulariser to
the single-vector contrastive losses, on every prefix.
"""

from typing import Callable, Optional

import gin
import jax
import ml_collections

from gecko_jax.errors import UserError
from gecko_jax.losses.aligner import aligner_loss
from gecko_jax.losses.alignment import parse_alignment
from gecko_jax.losses.gecko import gecko_loss
from gecko_jax.losses.gemini_nce import gemini_nce_loss
from gecko_jax.losses.jasper import jasper_loss, split_teachers, teacher_targets
from gecko_jax.losses.loss import Loss, LossFn
from gecko_jax.losses.matryoshka import matryoshka
from gecko_jax.losses.spread_out import spread_out_loss
from gecko_jax.losses.xtr import xtr_loss
from gecko_jax.models.salience import split_saliences


def _with_mrl_and_spread_out(loss_config: ml_collections.ConfigDict, contrastive: LossFn) -> LossFn:
    """Adds the optional spread-out term, then sums over Matryoshka prefixes."""
    spread_out_weight = loss_config.spread_out_weight

    def prefix_loss(embeddings: dict, batch: dict) -> jax.Array:
        loss = contrastive(embeddings, batch)
        if spread_out_weight:
            loss += spread_out_weight * spread_out_loss([embeddings["query"], embeddings["positive"]])
        return loss

    return matryoshka(prefix_loss, loss_config.mrl_dims, loss_config.mrl_weights or None)


def _no_spread_out(loss_config: ml_collections.ConfigDict) -> None:
    """Refuses the spread-out term where towers are not single [B, D] vectors."""
    if loss_config.spread_out_weight:
        raise UserError(
            f"loss.spread_out_weight is for the single-vector contrastive losses "
            f"(gecko, gemini_nce), not loss.name={loss_config.name!r}"
        )


def _gecko(loss_config: ml_collections.ConfigDict) -> Loss:
    def contrastive(embeddings: dict, batch: dict) -> jax.Array:
        return gecko_loss(
            embeddings["query"],
            embeddings["positive"],
            embeddings.get("negative"),
            batch.get("has_negative"),
            temperature=loss_config.temperature,
            same_tower=loss_config.same_tower,
        )

    return Loss(_with_mrl_and_spread_out(loss_config, contrastive))


def _gemini_nce(loss_config: ml_collections.ConfigDict) -> Loss:
    def contrastive(embeddings: dict, batch: dict) -> jax.Array:
        return gemini_nce_loss(
            embeddings["query"],
            embeddings["positive"],
            embeddings.get("negative"),
            batch.get("has_negative"),
            query_hash=batch.get("query_hash"),
            positive_hash=batch.get("positive_hash"),
            example_id=batch.get("example_id"),
            temperature=loss_config.temperature,
        )

    return Loss(_with_mrl_and_spread_out(loss_config, contrastive))


def _jasper_distill(loss_config: ml_collections.ConfigDict) -> Loss:
    _no_spread_out(loss_config)
    dims = tuple(loss_config.mrl_dims)
    # The released Jasper code averages L_sim and L_resim over the prefixes.
    dim_weights = loss_config.mrl_weights or ((1.0 / len(dims),) * len(dims) if dims else None)

    def loss_fn(embeddings: dict, batch: dict) -> jax.Array:
        if "teacher" not in batch:
            raise UserError(
                "loss.name='jasper_distill' needs teacher vectors in the batch; set "
                "--config.data.teachers to teacher stores or Encoder specs"
            )
        teacher = teacher_targets(split_teachers(batch["teacher"], loss_config.jasper_teacher_dims))
        return jasper_loss(
            embeddings["query"],
            teacher,
            weights=loss_config.jasper_weights,
            margin=loss_config.jasper_margin,
            dims=dims,
            dim_weights=dim_weights,
            chunk_size=loss_config.jasper_chunk_size,
        )

    return Loss(loss_fn, text_fields=("query",))


def _xtr(loss_config: ml_collections.ConfigDict) -> Loss:
    _no_spread_out(loss_config)

    def token_loss(embeddings: dict, batch: dict) -> jax.Array:
        return xtr_loss(
            embeddings["query"],
            batch["query_mask"],
            embeddings["positive"],
            batch["positive_mask"],
            embeddings.get("negative"),
            batch.get("negative_mask"),
            batch.get("has_negative"),
            k_train=loss_config.xtr_k_train,
        )

    return Loss(matryoshka(token_loss, loss_config.mrl_dims, loss_config.mrl_weights or None))


def _aligner(loss_config: ml_collections.ConfigDict) -> Loss:
    _no_spread_out(loss_config)
    alignment = parse_alignment(loss_config.aligner_alignment, "--config.loss.aligner_alignment")

    def token_loss(vectors: dict, batch: dict, saliences: dict) -> jax.Array:
        return aligner_loss(
            vectors["query"],
            batch["query_mask"],
            saliences["query"],
            vectors["positive"],
            batch["positive_mask"],
            saliences["positive"],
            vectors.get("negative"),
            batch.get("negative_mask"),
            saliences.get("negative"),
            batch.get("has_negative"),
            alignment=alignment,
            temperature=loss_config.temperature,
        )

    prefixes = matryoshka(token_loss, loss_config.mrl_dims, loss_config.mrl_weights or None)

    def loss_fn(embeddings: dict, batch: dict) -> jax.Array:
        # Queries are weighed by the query head, documents by the document head.
        vectors, saliences = {}, {}
        for field, tokens in embeddings.items():
            vectors[field], query_salience, doc_salience = split_saliences(tokens)
            saliences[field] = query_salience if field == "query" else doc_salience
        return prefixes(vectors, batch, saliences)

    return Loss(loss_fn)


LOSSES: dict[str, Callable[[ml_collections.ConfigDict], Loss]] = {
    "gecko": _gecko,
    "gemini_nce": _gemini_nce,
    "jasper_distill": _jasper_distill,
    "xtr": _xtr,
    "aligner": _aligner,
}

# Registered losses that score per-token vectors from a multi-vector tower.
TOKEN_LOSSES = ("xtr", "aligner")
# Those that read the saliences of a tower with salience heads.
SALIENCE_LOSSES = ("aligner",)


def check_tower_for_loss(loss_name: str, multi_vector_dim: int, salience_heads: bool = False) -> None:
    """Refuses a registered loss on embeddings of the wrong kind.

    Args:
      loss_name: `loss.name`.
      multi_vector_dim: `model.multi_vector_dim` (0 = a single-vector tower).
      salience_heads: `model.salience_heads`.

    Raises:
      UserError: a token-level loss on a single-vector tower, a single-vector
        loss on a multi-vector tower, or salience heads for a loss that does
        not read them (or none for one that does).
    """
    if loss_name in TOKEN_LOSSES and not multi_vector_dim:
        raise UserError(
            f"loss.name={loss_name!r} scores token vectors; set "
            "--config.model.multi_vector_dim (e.g. 128) for a multi-vector tower"
        )
    if loss_name in LOSSES and loss_name not in TOKEN_LOSSES and multi_vector_dim:
        raise UserError(
            f"loss.name={loss_name!r} needs one vector per text, but "
            f"model.multi_vector_dim={multi_vector_dim} gives token vectors; use "
            f"loss.name in {TOKEN_LOSSES} or set model.multi_vector_dim=0"
        )
    if loss_name in SALIENCE_LOSSES and not salience_heads:
        raise UserError(
            f"loss.name={loss_name!r} weighs tokens by learned saliences; set "
            "--config.model.salience_heads=True"
        )
    if loss_name in TOKEN_LOSSES and loss_name not in SALIENCE_LOSSES and salience_heads:
        raise UserError(
            f"loss.name={loss_name!r} does not read saliences; set "
            "--config.model.salience_heads=False (or use loss.name='aligner')"
        )


@gin.configurable(denylist=["loss_config"])
def build_loss(
    loss_config: ml_collections.ConfigDict,
    builder: Optional[Callable[[ml_collections.ConfigDict], Loss]] = None,
) -> Loss:
    """The loss named by `loss_config.name`, or a gin-bound `builder` instead.

    Args:
      loss_config: the `loss` section of the run config.
      builder: set through gin (`build_loss.builder = @my_loss_builder`) to use
        a loss that is not registered here; it receives `loss_config` and
        returns a `Loss`.

    Returns:
      The loss.
    """
    if builder is not None:
        loss = builder(loss_config)
        if not isinstance(loss, Loss):
            raise UserError(
                f"build_loss.builder returned {type(loss).__name__}; return "
                "gecko_jax.losses.loss.Loss(fn, text_fields), fn mapping "
                "(embeddings, batch) to the loss"
            )
        return loss
    if loss_config.name not in LOSSES:
        raise UserError(f"loss.name={loss_config.name!r} is unknown; use one of {sorted(LOSSES)}")
    return LOSSES[loss_config.name](loss_config)
