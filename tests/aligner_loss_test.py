"""AligneR's sparse-alignment score and loss against a NumPy transcription of the paper's formulas.

sim(Q, D) = sum_ij S_ij A_ij / sum_ij A_ij, A = Ã ⊙ (u^q ⊗ u^d), Ã by top-k or
top-p per query token (arXiv 2211.01267, section 3).
"""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from finite_differences import check_gradient
from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.aligner import aligner_loss, aligner_scores
from gecko_jax.losses.alignment import ADAPTATION_GRID, TOP1, Alignment, parse_alignment
from gecko_jax.losses.registry import build_loss, check_tower_for_loss
from gecko_jax.training import sharding


def numpy_count(kind, value, m):
    """Document tokens a query token aligns to, with exact arithmetic."""
    if kind == "topk":
        return min(int(value), m)
    return max(int(Fraction(str(value)) * m / 100), 1)


def numpy_sim(q, q_mask, q_sal, d, d_mask, d_sal, kind, value):
    """sim of one query and one document, token by token."""
    tokens = [j for j in range(len(d)) if d_mask[j]]
    numerator = z = 0.0
    for i in range(len(q)):
        if not q_mask[i] or not tokens:
            continue
        sims = {j: float(np.dot(q[i], d[j])) for j in tokens}
        aligned = sorted(tokens, key=lambda j: -sims[j])[: numpy_count(kind, value, len(tokens))]
        for j in aligned:
            numerator += q_sal[i] * d_sal[j] * sims[j]
            z += q_sal[i] * d_sal[j]
    return numerator / z if z > 0 else 0.0


def numpy_scores(q, q_mask, q_sal, d, d_mask, d_sal, kind, value):
    return np.array(
        [
            [
                numpy_sim(q[a], q_mask[a], q_sal[a], d[b], d_mask[b], d_sal[b], kind, value)
                for b in range(len(d))
            ]
            for a in range(len(q))
        ]
    )


def numpy_loss(q, q_mask, q_sal, p, p_mask, p_sal, n, n_mask, n_sal, has_negative, kind, value, temperature):
    batch = len(q)
    docs, masks = np.concatenate([p, n]), np.concatenate([p_mask, n_mask])
    saliences = np.concatenate([p_sal, n_sal])
    scores = numpy_scores(q, q_mask, q_sal, docs, masks, saliences, kind, value) / temperature
    valid = np.concatenate([np.ones(batch, bool), has_negative > 0])
    return np.mean([np.log(np.sum(np.exp(scores[a][valid]))) - scores[a, a] for a in range(batch)])


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _mask(lengths, width):
    return (np.arange(width)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)


def _example(seed, batch=3, n=4, m=9, dim=6):
    rng = np.random.default_rng(seed)
    q, p, neg = (_unit(rng.normal(size=(batch, width, dim))) for width in (n, m, m))
    q_mask = _mask(rng.integers(1, n + 1, size=batch), n)
    p_mask = _mask(rng.integers(1, m + 1, size=batch), m)
    n_mask = _mask(rng.integers(1, m + 1, size=batch), m)
    q_sal, p_sal, n_sal = (rng.uniform(0.1, 1.0, size=(batch, width)) for width in (n, m, m))
    has_negative = np.array([1, 0, 1][:batch])
    return q, q_mask, q_sal, p, p_mask, p_sal, neg, n_mask, n_sal, has_negative


_jit_scores = jax.jit(aligner_scores, static_argnames="alignment")
_jit_loss = jax.jit(aligner_loss, static_argnames=("alignment", "temperature"))

ALIGNMENTS = [
    TOP1,
    Alignment("topk", 3),
    Alignment("topk", 20),
    Alignment("topp", 0.5),
    Alignment("topp", 25),
    Alignment("topp", 50),
]


@pytest.mark.parametrize("alignment", ALIGNMENTS, ids=lambda a: a.name)
def test_scores_match_numpy(alignment):
    q, q_mask, q_sal, p, p_mask, p_sal, *_ = _example(0)
    got = _jit_scores(*(jnp.asarray(x) for x in (q, q_mask, q_sal, p, p_mask, p_sal)), alignment=alignment)
    expected = numpy_scores(q, q_mask, q_sal, p, p_mask, p_sal, alignment.kind, alignment.value)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-6)


def test_top1_with_uniform_saliences_is_colbert_maxsim():
    q, q_mask, _, p, p_mask, *_ = _example(1)
    ones = [np.full(x.shape, 0.7) for x in (q_mask, p_mask)]
    got = np.asarray(
        _jit_scores(
            jnp.asarray(q),
            jnp.asarray(q_mask),
            jnp.asarray(ones[0]),
            jnp.asarray(p),
            jnp.asarray(p_mask),
            jnp.asarray(ones[1]),
        )
    )
    # MaxSim: the mean over real query tokens of the best real document token.
    sims = np.einsum("qid,bjd->qibj", q, p)
    sims = np.where(p_mask[None, None] > 0, sims, -np.inf).max(axis=-1)
    colbert = (sims * q_mask[:, :, None]).sum(axis=1) / q_mask.sum(axis=1)[:, None]
    np.testing.assert_allclose(got, colbert, rtol=1e-5, atol=1e-6)


def test_top_p_count_grows_with_the_document():
    # One query token against a document of 8 equal-salience tokens with
    # similarities 0.8, 0.7, ... 0.1: topp:25 aligns 2 tokens, topp:50 four.
    e = np.eye(9)
    q = e[None, :1]
    sims = np.linspace(0.8, 0.1, 8)
    d = _unit(sims[:, None] * e[0] + np.sqrt(1 - sims[:, None] ** 2) * e[1:9])[None]
    ones = np.ones((1, 1)), np.ones((1, 8))
    for percent, expected in ((25, np.mean(sims[:2])), (50, np.mean(sims[:4])), (1, sims[0])):
        got = _jit_scores(
            jnp.asarray(q),
            jnp.asarray(ones[0]),
            jnp.asarray(ones[0]),
            jnp.asarray(d),
            jnp.asarray(ones[1]),
            jnp.asarray(ones[1]),
            alignment=Alignment("topp", percent),
        )
        np.testing.assert_allclose(float(got[0, 0]), expected, rtol=1e-5)


def test_padding_content_and_empty_documents():
    q, q_mask, q_sal, p, p_mask, p_sal, *_ = _example(2)
    p_mask[1] = 0  # A document without real tokens scores 0.
    noisy = [x.copy() for x in (q, q_sal, p, p_sal)]
    for x, mask in zip(noisy, (q_mask, q_mask, p_mask, p_mask)):
        x[mask == 0] = 5.0  # Would win every top-k and weigh most if it were not masked.
    alignment = Alignment("topk", 2)
    clean = _jit_scores(*(jnp.asarray(x) for x in (q, q_mask, q_sal, p, p_mask, p_sal)), alignment=alignment)
    dirty = _jit_scores(
        *(jnp.asarray(x) for x in (noisy[0], q_mask, noisy[1], noisy[2], p_mask, noisy[3])),
        alignment=alignment,
    )
    np.testing.assert_allclose(np.asarray(dirty), np.asarray(clean), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(clean)[:, 1], 0.0)


@pytest.mark.parametrize("alignment", [TOP1, Alignment("topp", 50)], ids=lambda a: a.name)
def test_loss_matches_numpy(alignment):
    example = _example(3)
    got = _jit_loss(*(jnp.asarray(x) for x in example), alignment=alignment, temperature=0.1)
    expected = numpy_loss(*example, alignment.kind, alignment.value, 0.1)
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


def test_gradient_matches_finite_differences():
    q, q_mask, q_sal, p, p_mask, p_sal, neg, n_mask, n_sal, has_negative = _example(4)
    parts = [q, q_sal, p, p_sal, neg, n_sal]
    shapes = [x.shape for x in parts]
    sizes = np.cumsum([np.prod(s) for s in shapes])[:-1]
    flat = np.concatenate([x.ravel() for x in parts])

    def split(x, xp):
        return [part.reshape(shape) for part, shape in zip(xp.split(x, sizes), shapes)]

    def reference(x):
        qq, qs, pp, ps, nn_, ns = split(x, np)
        return numpy_loss(qq, q_mask, qs, pp, p_mask, ps, nn_, n_mask, ns, has_negative, "topk", 2, 0.2)

    def jax_loss(x):
        qq, qs, pp, ps, nn_, ns = split(x, jnp)
        return aligner_loss(
            qq,
            jnp.asarray(q_mask),
            qs,
            pp,
            jnp.asarray(p_mask),
            ps,
            nn_,
            jnp.asarray(n_mask),
            ns,
            jnp.asarray(has_negative),
            alignment=Alignment("topk", 2),
            temperature=0.2,
        )

    check_gradient(jax_loss, reference, flat, seed=4, samples=24)


def test_parse_alignment():
    assert parse_alignment("top1") == TOP1
    assert parse_alignment("topk:4") == Alignment("topk", 4)
    assert parse_alignment("topp:1.5") == Alignment("topp", 1.5)
    assert [a.name for a in ADAPTATION_GRID] == [
        "top1",
        "topk:2",
        "topk:4",
        "topk:6",
        "topk:8",
        "topp:0.5",
        "topp:1",
        "topp:1.5",
        "topp:2",
    ]
    for bad in ("top2", "topk:0", "topk:1.5", "topp:0", "topp:101", "topp:x", "colbert", ""):
        with pytest.raises(UserError, match="use top1, topk:K"):
            parse_alignment(bad)


def test_registry_refuses_towers_without_saliences():
    check_tower_for_loss("aligner", 128, True)
    with pytest.raises(UserError, match="set --config.model.multi_vector_dim"):
        check_tower_for_loss("aligner", 0, True)
    with pytest.raises(UserError, match="set --config.model.salience_heads=True"):
        check_tower_for_loss("aligner", 128, False)
    with pytest.raises(UserError, match="does not read saliences"):
        check_tower_for_loss("xtr", 128, True)
    config = base_config().loss
    config.update(name="aligner", aligner_alignment="top3")
    with pytest.raises(UserError, match="--config.loss.aligner_alignment='top3'"):
        build_loss(config)


def _tower_outputs(seed, batch=16, n=5, m=7, dim=6):
    """Embeddings as a salience tower gives them: [B, L, dim + 2], padding zero."""
    rng = np.random.default_rng(seed)
    batch_dict = {"has_negative": rng.integers(0, 2, size=batch).astype(np.int32)}
    embeddings = {}
    for field, width in (("query", n), ("positive", m), ("negative", m)):
        mask = _mask(rng.integers(1, width + 1, size=batch), width)
        tokens = np.concatenate(
            [_unit(rng.normal(size=(batch, width, dim))), rng.uniform(0.1, 1.0, size=(batch, width, 2))],
            axis=-1,
        )
        embeddings[field] = (tokens * mask[..., None]).astype(np.float32)
        batch_dict[f"{field}_mask"] = mask
    return embeddings, batch_dict


def test_registered_loss_reads_the_query_and_document_heads_and_sums_prefixes():
    config = base_config().loss
    config.update(name="aligner", aligner_alignment="topk:2", temperature=0.1, mrl_dims=(6, 3))
    embeddings, batch = _tower_outputs(5)
    got = float(jax.jit(build_loss(config))(embeddings, batch))
    expected = 0.0
    for dim in (6, 3):
        fields = {}
        for field, tokens in embeddings.items():
            vectors = tokens[..., :dim] / np.maximum(
                np.linalg.norm(tokens[..., :dim], axis=-1, keepdims=True), 1e-12
            )
            fields[field] = vectors, tokens[..., 6 if field == "query" else 7]
        expected += numpy_loss(
            fields["query"][0],
            batch["query_mask"],
            fields["query"][1],
            fields["positive"][0],
            batch["positive_mask"],
            fields["positive"][1],
            fields["negative"][0],
            batch["negative_mask"] * batch["has_negative"][:, None],
            fields["negative"][1],
            batch["has_negative"],
            "topk",
            2,
            0.1,
        )
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_loss_and_gradient_on_eight_devices_equal_one():
    config = base_config().loss
    config.update(name="aligner", mrl_dims=(6, 3))
    embeddings, batch = _tower_outputs(6)
    value_and_grad = jax.jit(jax.value_and_grad(build_loss(config)))
    single = value_and_grad(embeddings, batch)
    mesh = sharding.create_mesh({"data": -1}, jax.devices())
    rows = sharding.batch_sharding(mesh)
    with mesh:
        sharded = value_and_grad(jax.device_put(embeddings, rows), jax.device_put(batch, rows))
    assert len(jax.tree.leaves(sharded[1])[0].sharding.device_set) == 8
    np.testing.assert_allclose(float(sharded[0]), float(single[0]), rtol=1e-6)
    # The sums run in another order on 8 devices: float32 rounding, not a change of terms.
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), sharded[1], single[1])


def test_top_p_counts_are_exact_where_float32_is_not():
    # 7.2% of 375 is 27 exactly, 26.999998 in float32.
    e = np.eye(376)
    sims = np.linspace(0.9, 0.1, 375)
    d = (sims[:, None] * e[0] + np.sqrt(1 - sims[:, None] ** 2) * e[1:])[None]
    got = _jit_scores(
        jnp.asarray(e[None, :1]),
        jnp.ones((1, 1)),
        jnp.ones((1, 1)),
        jnp.asarray(d),
        jnp.ones((1, 375)),
        jnp.ones((1, 375)),
        alignment=Alignment("topp", 7.2),
    )
    np.testing.assert_allclose(float(got[0, 0]), np.mean(sims[:27]), rtol=1e-5)
