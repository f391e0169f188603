"""Tests for gecko_jax.data.pipeline: deterministic, resumable, host-sharded batches."""

import json

import numpy as np
import pytest
import seqio

from gecko_jax.config_base import base_config
from gecko_jax.data import formats
from gecko_jax.data import inspect
from gecko_jax.data import pipeline
from gecko_jax.data import sources
from gecko_jax.data import vocabularies
from gecko_jax.data.packing import bucket_length, pack
from gecko_jax.errors import UserError

GLOBAL_BATCH = 12  # Does not divide the 64 tiny examples, so batches span epochs.
SEED = 5


class _ByteVocabulary(seqio.ByteVocabulary):
    """UTF-8 bytes: cheap to trace, so order tests stay fast; bos is the unused id 2."""

    bos_id = 2


def _data_config(**fields):
    config = base_config().data
    config.update({"mixture": ("tiny",), "max_length": 48, "format": "gecko", **fields})
    return config


@pytest.fixture(scope="module")
def vocab():
    return _ByteVocabulary()


@pytest.fixture(scope="module")
def reference(vocab):
    return pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED)


def _assert_batches_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_batch_shapes_and_contents(reference, vocab):
    batch = reference.batch(0)
    assert reference.num_examples == 64
    for key in ("query", "positive", "negative"):
        assert batch[f"{key}_ids"].shape == batch[f"{key}_mask"].shape == (GLOBAL_BATCH, 48)
    assert batch["has_negative"].shape == (GLOBAL_BATCH,)
    assert all(v.dtype == np.int32 for v in batch.values())

    examples = sources.tiny()
    for row, index in enumerate(reference.example_indices(0)):
        texts = formats.format_example(examples[index], "gecko")
        for key in ("query", "positive"):
            ids, mask = batch[f"{key}_ids"][row], batch[f"{key}_mask"][row]
            np.testing.assert_array_equal(mask, ids != vocab.pad_id)
            assert ids[0] == vocab.bos_id and ids[mask.sum() - 1] == vocab.eos_id
            assert texts[key].encode("utf-8").startswith(bytes(int(i) - 3 for i in ids[1 : mask.sum() - 1]))
        assert batch["has_negative"][row] == ("negative" in examples[index])
        if not batch["has_negative"][row]:
            assert not batch["negative_mask"][row].any() and not batch["negative_ids"][row].any()


def test_every_epoch_is_a_permutation(reference):
    stream = np.concatenate([reference.example_indices(k) for k in range(16)])  # 192 = 3 epochs.
    for epoch in range(3):
        np.testing.assert_array_equal(np.sort(stream[64 * epoch : 64 * (epoch + 1)]), np.arange(64))
    assert not np.array_equal(stream[:64], stream[64:128])


def test_deterministic_and_resume_equals_uninterrupted(reference, vocab):
    uninterrupted = pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED)
    expected = [next(uninterrupted) for _ in range(12)]
    for k in range(12):
        _assert_batches_equal(reference.batch(k), expected[k])

    state = json.loads(json.dumps(uninterrupted.get_state()))
    assert state == {"next_batch": 12, "global_batch_size": GLOBAL_BATCH, "seed": SEED, "num_examples": 64}
    later = [next(uninterrupted) for _ in range(5)]

    restarted = pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED)
    restarted.set_state(state)
    for want in later:
        _assert_batches_equal(next(restarted), want)
    assert restarted.get_state()["next_batch"] == 17


def test_host_shards_concatenate_to_the_global_batch(reference, vocab):
    hosts = [
        pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED, process_index=p, process_count=2)
        for p in range(2)
    ]
    for k in range(8):
        parts = [next(host) for host in hosts]
        whole = reference.batch(k)
        for key in whole:
            assert parts[0][key].shape[0] == GLOBAL_BATCH // 2
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key], err_msg=key)
    assert hosts[0].get_state() == hosts[1].get_state()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"seed": SEED + 1}, "data order changed"),
        ({"num_examples": 65}, "training data changed"),
        ({"global_batch_size": 24}, "global batch size"),
        ({"next_batch": "3"}, "malformed"),
    ],
)
def test_set_state_rejects_a_different_run(reference, change, message):
    state = {**reference.get_state(), **change}
    with pytest.raises(UserError, match=message):
        reference.set_state(state)


def test_set_state_rejects_missing_keys(reference):
    with pytest.raises(UserError, match="malformed"):
        reference.set_state({"next_batch": 1})


def test_bad_arguments(vocab):
    with pytest.raises(UserError, match="divisible by the 3 processes"):
        pipeline.TrainData(_data_config(), vocab, 8, 0, process_count=3)
    with pytest.raises(UserError, match="max_length"):
        pipeline.TrainData(_data_config(max_length=2), vocab, 8, 0)
    with pytest.raises(UserError, match="seed"):
        pipeline.TrainData(_data_config(), vocab, 8, -1)
    with pytest.raises(UserError, match="--config.data.format"):
        pipeline.TrainData(_data_config(format="t5"), vocab, 8, 0)


def test_malformed_training_file_names_path_and_line(tmp_path, vocab):
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "q", "positive": "p"}\n{"query": "q", "positive": 5}\n', encoding="utf-8")
    with pytest.raises(UserError, match=f'^{path}:2: field "positive" must be a string'):
        pipeline.TrainData(_data_config(train_files=str(path)), vocab, 8, 0)


def test_missing_data_dir_says_how_to_fix(tmp_path, vocab):
    with pytest.raises(UserError, match="--config.data.data_dir"):
        pipeline.TrainData(_data_config(mixture=("squad", "snli"), tfds_dir=str(tmp_path)), vocab, 8, 0)


def test_with_the_minilm_vocabulary(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "query": f"question {i}",
                    "positive": f"answer number {i}",
                    **({"negative": "wrong"} if i % 2 else {}),
                }
            )
            + "\n"
            for i in range(6)
        ),
        encoding="utf-8",
    )
    vocab = vocabularies.get_vocabulary("minilm")
    data = pipeline.TrainData(_data_config(train_files=str(path), format="plain", max_length=8), vocab, 4, 0)
    batch = next(data)
    assert data.num_examples == 6
    assert (batch["query_ids"][:, 0] == vocab.bos_id).all()
    for row, index in enumerate(data.example_indices(0)):
        assert vocab.decode(batch["positive_ids"][row].tolist()) == f"answer number {index}"
        assert batch["has_negative"][row] == index % 2


def test_queries_can_be_shorter_than_documents(vocab):
    data = pipeline.TrainData(_data_config(query_max_length=16), vocab, GLOBAL_BATCH, SEED)
    batch = data.batch(0)
    assert batch["query_ids"].shape == (GLOBAL_BATCH, 16)
    assert batch["positive_ids"].shape == (GLOBAL_BATCH, 48)
    full = pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED).batch(0)
    np.testing.assert_array_equal(batch["positive_ids"], full["positive_ids"])


def test_identity_features_mark_equal_texts(vocab):
    data = pipeline.TrainData(_data_config(), vocab, GLOBAL_BATCH, SEED)
    batch = data.batch(0)
    for key in pipeline.IDENTITY_FEATURES:
        assert batch[key].shape == (GLOBAL_BATCH,) and batch[key].dtype == np.int32
    indices = data.example_indices(0)
    examples = sources.tiny()
    queries = [formats.format_example(examples[i], "gecko")["query"] for i in indices]
    for a in range(GLOBAL_BATCH):
        for b in range(GLOBAL_BATCH):
            assert (batch["query_hash"][a] == batch["query_hash"][b]) == (queries[a] == queries[b])
    assert len(set(batch["example_id"].tolist())) == GLOBAL_BATCH


def _two_source_config(tmp_path, **fields):
    """tiny (64 examples) plus a 10-example JSONL source read as FRet output."""
    path = tmp_path / "fret.jsonl"
    path.write_text(
        "".join(
            json.dumps({"query": f"fret query {i}", "positive": f"fret passage {i}", "task": "search result"})
            + "\n"
            for i in range(10)
        ),
        encoding="utf-8",
    )
    return _data_config(mixture=("tiny:1", "fret:1"), fret_files=str(path), **fields)


def test_one_source_batches_resume_equals_uninterrupted(tmp_path, vocab):
    config = _two_source_config(tmp_path, one_source_batches=True)
    uninterrupted = pipeline.TrainData(config, vocab, 4, SEED)
    expected = [next(uninterrupted) for _ in range(40)]
    sources_seen = set()
    for k in range(40):
        indices = uninterrupted.example_indices(k)
        names = set(uninterrupted.source_of(indices))
        assert names == {uninterrupted.batch_source(k)}  # Every row of a batch from the one source.
        sources_seen |= names
    assert sources_seen == {"tiny", "fret"}

    state = json.loads(json.dumps(pipeline.TrainData(config, vocab, 4, SEED).get_state()))
    restarted = pipeline.TrainData(config, vocab, 4, SEED)
    state["next_batch"] = 25
    restarted.set_state(state)
    for k in range(25, 40):
        _assert_batches_equal(next(restarted), expected[k])
    with pytest.raises(UserError, match="mixture .* changed"):
        pipeline.TrainData(_two_source_config(tmp_path), vocab, 4, SEED).set_state(state)


def test_one_source_batches_walk_each_source_as_permutations(tmp_path, vocab):
    data = pipeline.TrainData(_two_source_config(tmp_path, one_source_batches=True), vocab, 4, SEED)
    by_source = {"tiny": [], "fret": []}
    for k in range(200):
        by_source[data.batch_source(k)].append(data.example_indices(k))
    # Rates 1:1: about half the batches each (binomial, 200 draws).
    assert 70 < len(by_source["fret"]) < 130
    tiny = np.concatenate(by_source["tiny"])[:64]
    np.testing.assert_array_equal(np.sort(tiny), np.arange(64))
    fret = np.concatenate(by_source["fret"])[:20]
    for epoch in range(2):
        np.testing.assert_array_equal(np.sort(fret[10 * epoch : 10 * (epoch + 1)]), np.arange(64, 74))


def test_rates_mix_rows_in_proportion_and_host_shards_agree(tmp_path, vocab):
    config = _two_source_config(tmp_path)
    whole = pipeline.TrainData(config, vocab, 8, SEED)
    names = [n for k in range(100) for n in whole.source_of(whole.example_indices(k))]
    assert 0.4 < names.count("fret") / len(names) < 0.6  # Rate 1:1, although tiny has 6x the examples.
    hosts = [pipeline.TrainData(config, vocab, 8, SEED, process_index=p, process_count=2) for p in range(2)]
    for k in range(5):
        np.testing.assert_array_equal(
            np.concatenate([h.example_indices(k) for h in hosts]), whole.example_indices(k)
        )


def test_bucketed_batches_drop_only_padding(vocab):
    # Long enough that the byte-level texts fall into several buckets.
    reference = pipeline.TrainData(_data_config(max_length=200), vocab, GLOBAL_BATCH, SEED)
    data = pipeline.TrainData(_data_config(max_length=200, bucket_lengths=True), vocab, GLOBAL_BATCH, SEED)
    buckets = [8, 16, 24, 32, 48, 64, 96, 128, 192, 200]
    seen = set()
    for k in range(12):
        full, cut = reference.batch(k), data.batch(k)
        query = cut["query_ids"].shape[1]
        document = cut["positive_ids"].shape[1]
        assert cut["negative_ids"].shape[1] == document
        assert data.padded_lengths(k) == {"query": query, "positive": document, "negative": document}
        assert query == bucket_length(full["query_mask"].sum(axis=1).max(), buckets)
        longest = max(full[f"{f}_mask"].sum(axis=1).max() for f in ("positive", "negative"))
        assert document == bucket_length(longest, buckets)
        for key in full:
            width = cut[key].shape[1] if cut[key].ndim == 2 else None
            np.testing.assert_array_equal(cut[key], full[key][:, :width] if width else full[key], err_msg=key)
            if width:
                assert not full[key.replace("_ids", "_mask")][:, width:].any()
        seen.add((query, document))
    assert len(seen) > 1 and all(d < 200 for _, d in seen)


def test_bucketed_host_shards_share_the_global_lengths(vocab):
    config = _data_config(bucket_lengths=True)
    whole = pipeline.TrainData(config, vocab, GLOBAL_BATCH, SEED)
    hosts = [
        pipeline.TrainData(config, vocab, GLOBAL_BATCH, SEED, process_index=p, process_count=2)
        for p in range(2)
    ]
    for k in range(8):
        parts = [host.batch(k) for host in hosts]
        for key, value in whole.batch(k).items():
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), value, err_msg=key)


def test_length_limit_shares_count_negatives_over_examples_that_have_one(tmp_path, vocab, caplog):
    # max_length 4 holds bos, 2 bytes and eos: "abc" is cut, "a" is not.
    rows = [
        {"query": "abc", "positive": "abc", "negative": "abc"},
        {"query": "a", "positive": "abc"},
        {"query": "a", "positive": "a"},
        {"query": "a", "positive": "a"},
    ]
    path = tmp_path / "toy.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with caplog.at_level("INFO"):
        pipeline.TrainData(_data_config(train_files=str(path), format="plain", max_length=4), vocab, 4, 0)
    assert (
        "train_files: 4 examples, 1 with a hard negative; at the length limit (cut): query 25.0%, "
        "positive 50.0%, negative 100.0%"
    ) in caplog.text


def test_inspect_marks_texts_at_their_limit_not_at_a_bucket():
    vocabulary = vocabularies.get_vocabulary("minilm")
    tokens = vocabulary.encode("a cat sat")
    ids, mask = pack([tokens], len(tokens) + 2, vocabulary.bos_id, vocabulary.eos_id, vocabulary.pad_id)
    # The row fills its bucket; only a limit that short would have cut it.
    assert inspect.decode_row(vocabulary, ids[0], mask[0], limit=32) == "a cat sat"
    assert inspect.decode_row(vocabulary, ids[0], mask[0], limit=len(tokens) + 2) == "a cat sat ..."
