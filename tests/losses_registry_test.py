"""The registry adapters: which batch keys and config fields each loss reads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses import jasper
from gecko_jax.losses.gecko import matryoshka_gecko_loss
from gecko_jax.losses.gemini_nce import gemini_nce_loss
from gecko_jax.losses.registry import build_loss
from gecko_jax.losses.spread_out import spread_out_loss
from gecko_jax.losses.xtr import xtr_loss
from gecko_jax.models.tower import truncate_and_normalize

B = 4


def _loss_config(name, **overrides):
    config = base_config().loss
    config.name = name
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _pooled(seed, dim=8):
    rng = np.random.default_rng(seed)
    return {f: jnp.asarray(rng.normal(size=(B, dim)), jnp.float32) for f in ("query", "positive", "negative")}


def _run(config, embeddings, batch):
    return float(jax.jit(build_loss(config))(embeddings, batch))


def _jit_value(fn):
    """Evaluates `fn()` as one compiled program (eager dispatch compiles op by op)."""
    return float(jax.jit(fn)())


def test_gecko_equals_the_matryoshka_gecko_loss():
    embeddings = _pooled(0)
    batch = {"has_negative": jnp.array([1, 0, 1, 1])}
    config = _loss_config("gecko", mrl_dims=(8, 4), mrl_weights=(1.0, 0.5))
    expected = _jit_value(
        lambda: matryoshka_gecko_loss(
            embeddings["query"],
            embeddings["positive"],
            embeddings["negative"],
            batch["has_negative"],
            dims=(8, 4),
            weights=(1.0, 0.5),
            temperature=0.05,
        )
    )
    np.testing.assert_allclose(_run(config, embeddings, batch), expected, rtol=1e-5)


def test_gemini_nce_reads_the_identity_keys_and_adds_spread_out_per_prefix():
    embeddings = _pooled(1)
    batch = {
        "has_negative": jnp.array([1, 1, 0, 1]),
        "query_hash": jnp.array([3, 3, 5, 6]),
        "positive_hash": jnp.array([1, 2, 3, 4]),
        "example_id": jnp.array([0, 1, 2, 2]),
    }
    config = _loss_config("gemini_nce", mrl_dims=(8, 4), spread_out_weight=0.5, temperature=0.1)

    def expected():
        total = 0.0
        for dim in (8, 4):
            q, p, n = (truncate_and_normalize(embeddings[f], dim) for f in ("query", "positive", "negative"))
            total += gemini_nce_loss(
                q,
                p,
                n,
                batch["has_negative"],
                query_hash=batch["query_hash"],
                positive_hash=batch["positive_hash"],
                example_id=batch["example_id"],
                temperature=0.1,
            ) + 0.5 * spread_out_loss([q, p])
        return total

    np.testing.assert_allclose(_run(config, embeddings, batch), _jit_value(expected), rtol=1e-5)


def test_gemini_nce_without_identity_keys_masks_only_the_diagonal():
    embeddings = _pooled(2)
    batch = {"has_negative": jnp.ones(B, jnp.int32)}
    q, p, n = (truncate_and_normalize(embeddings[f], None) for f in ("query", "positive", "negative"))
    expected = _jit_value(lambda: gemini_nce_loss(q, p, n, batch["has_negative"], temperature=0.05))
    np.testing.assert_allclose(_run(_loss_config("gemini_nce"), embeddings, batch), expected, rtol=1e-5)


def test_jasper_builds_targets_from_the_teacher_key_and_averages_prefixes():
    rng = np.random.default_rng(3)
    student = jnp.asarray(rng.normal(size=(B, 10)), jnp.float32)
    teacher = jnp.asarray(rng.normal(size=(B, 10)) * 7.0, jnp.float32)
    config = _loss_config("jasper_distill", mrl_dims=(10, 5), jasper_teacher_dims=(4, 6), jasper_chunk_size=2)
    expected = _jit_value(
        lambda: jasper.jasper_loss(
            student,
            jasper.teacher_targets([teacher[:, :4], teacher[:, 4:]]),
            dims=(10, 5),
            dim_weights=(0.5, 0.5),
        )
    )
    got = _run(config, {"query": student, "positive": student, "negative": student}, {"teacher": teacher})
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_xtr_reads_the_token_masks():
    rng = np.random.default_rng(4)
    tokens = {
        f: truncate_and_normalize(jnp.asarray(rng.normal(size=(B, 5, 8)), jnp.float32), None)
        for f in ("query", "positive", "negative")
    }
    first_token = np.eye(1, 5, dtype=np.int32)  # every text keeps at least one token
    batch = {
        f"{f}_mask": jnp.asarray(np.maximum(rng.integers(0, 2, size=(B, 5)), first_token))
        for f in ("query", "positive", "negative")
    }
    batch["has_negative"] = jnp.array([1, 0, 1, 1])
    config = _loss_config("xtr", xtr_k_train=6)
    expected = _jit_value(
        lambda: xtr_loss(
            tokens["query"],
            batch["query_mask"],
            tokens["positive"],
            batch["positive_mask"],
            tokens["negative"],
            batch["negative_mask"],
            batch["has_negative"],
            k_train=6,
        )
    )
    np.testing.assert_allclose(_run(config, tokens, batch), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["jasper_distill", "xtr"])
def test_spread_out_is_refused_where_it_does_not_apply(name):
    with pytest.raises(UserError, match="loss.spread_out_weight is for the single-vector"):
        build_loss(_loss_config(name, spread_out_weight=0.1))


@pytest.mark.parametrize(
    "name, fields", [("gecko", ("query", "positive", "negative")), ("jasper_distill", ("query",))]
)
def test_each_loss_names_the_text_fields_it_reads(name, fields):
    loss = build_loss(_loss_config(name))
    assert loss.text_fields == fields
    # A batch without hard negatives has no negative arrays to embed.
    batch = {"query_ids": None, "positive_ids": None}
    assert loss.fields_in(batch) == tuple(f for f in fields if f != "negative")
