"""Prepared training data: the first-use cache, bad input, prepared folders and reads by row."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

from gecko_jax.config_base import base_config
from gecko_jax.data import pipeline
from gecko_jax.data import prepare
from gecko_jax.data import prepared
from gecko_jax.data import records
from gecko_jax.data import tasks
from gecko_jax.data import vocabularies
from gecko_jax.errors import UserError

from conftest import REPO

ROWS = [
    {
        "query": f"question {i}",
        "positive": f"passage number {i} " * (i % 5 + 1),
        "id": f"q{i}",
        **({"negative": f"other passage {i}"} if i % 3 else {}),
    }
    for i in range(40)
]


class _ByteVocabulary(seqio.ByteVocabulary):
    bos_id = 2


@pytest.fixture(name="vocab", scope="module")
def _vocab():
    return _ByteVocabulary()


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def _config(tmp_path, train_files, **fields):
    config = base_config().data
    config.update(
        {
            "train_files": train_files,
            "max_length": 32,
            "format": "plain",
            "cache_dir": str(tmp_path / "cache"),
            **fields,
        }
    )
    return config


@pytest.fixture(name="preparations")
def _preparations(monkeypatch):
    """Counts the shards written (each preparation writes one)."""
    calls = []
    write_shard = prepare.write_shard

    def counting(*args, **kwargs):
        calls.append(args[1])
        return write_shard(*args, **kwargs)

    monkeypatch.setattr(prepare, "write_shard", counting)
    return calls


def _texts(data, batch_index):
    batch = data.batch(batch_index)
    return [
        bytes(int(i) - 3 for i in ids[1 : mask.sum() - 1]).decode()
        for ids, mask in zip(batch["positive_ids"], batch["positive_mask"])
    ]


def test_the_cache_is_reused_and_a_touched_file_is_not_prepared_again(tmp_path, vocab, preparations):
    path = _write(tmp_path / "train.jsonl", ROWS)
    first = pipeline.TrainData(_config(tmp_path, path), vocab, 8, 0)
    second = pipeline.TrainData(_config(tmp_path, path), vocab, 8, 0)
    os.utime(path, ns=(1, 1))  # Same contents, another time: the SHA-256 still matches.
    third = pipeline.TrainData(_config(tmp_path, path), vocab, 8, 0)
    assert len(preparations) == 1
    for data in (second, third):
        for k in range(6):
            for key, value in first.batch(k).items():
                np.testing.assert_array_equal(data.batch(k)[key], value, err_msg=key)


def test_a_changed_file_or_setting_is_prepared_again(tmp_path, vocab, preparations):
    path = tmp_path / "train.jsonl"
    _write(path, ROWS)
    before = pipeline.TrainData(_config(tmp_path, str(path)), vocab, 8, 0)
    changed = [dict(row, positive=row["positive"].upper()) for row in ROWS]  # Same size, same count.
    stat = os.stat(path)
    _write(path, changed)
    os.utime(
        path, ns=(stat.st_atime_ns, stat.st_mtime_ns)
    )  # Even with the old time, the size or hash differs.
    after = pipeline.TrainData(_config(tmp_path, str(path)), vocab, 8, 0)
    assert len(preparations) == 2
    assert _texts(after, 0) == [t.upper() for t in _texts(before, 0)]
    pipeline.TrainData(_config(tmp_path, str(path), max_length=24), vocab, 8, 0)
    assert len(preparations) == 3
    assert len([p for p in os.listdir(tmp_path / "cache") if not p.endswith(".lock")]) == 2


def test_a_bad_line_is_named_and_leaves_nothing_prepared(tmp_path, vocab):
    path = tmp_path / "train.jsonl"
    lines = [json.dumps(row) for row in ROWS] * 60
    lines[2000] = '{"query": "q", "positive": '  # After the first batches were tokenized and written.
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"^{path}:2001: not valid JSON"):
        pipeline.TrainData(_config(tmp_path, str(path)), vocab, 8, 0)
    assert [p for p in os.listdir(tmp_path / "cache") if not p.endswith(".lock")] == []


def test_each_host_reads_only_its_rows(tmp_path, vocab, monkeypatch):
    path = _write(tmp_path / "train.jsonl", ROWS)
    config = _config(tmp_path, path, bucket_lengths=True)
    hosts = [pipeline.TrainData(config, vocab, 8, 0, process_index=p, process_count=2) for p in range(2)]
    read = []
    original = prepared.PreparedSource.read
    monkeypatch.setattr(
        prepared.PreparedSource,
        "read",
        lambda self, rows, *args: read.append(list(rows)) or original(self, rows, *args),
    )
    for k in range(7):
        for host in hosts:
            read.clear()
            host.batch(k)
            assert sorted(r for rows in read for r in rows) == sorted(host.example_indices(k))


def test_long_texts_are_cut_before_tokenizing_and_keep_their_tokens(tmp_path):
    vocabulary = vocabularies.get_vocabulary("minilm")
    text = " ".join(f"word{i} and more" for i in range(20000))  # About 300k characters.
    rows = [{"query": "short query", "positive": text}]
    lengths = {"query": 16, "positive": 24, "negative": 24}
    ((batch, _),) = prepare.tokenized_batches(rows, "t", vocabulary, "plain", lengths)
    expected = [vocabulary.bos_id, *vocabulary.encode(text[:2000])[:22], vocabulary.eos_id]
    np.testing.assert_array_equal(batch["positive_ids"][0], expected)
    assert 24 * tasks.CHARS_PER_TOKEN_LIMIT < len(text)  # The text was cut, to far more than it needs.


def test_records_round_trip_and_name_unnamed_examples_by_row():
    sequences = {
        "query": np.array([2, 7, 3]),
        "positive": np.array([2, 8, 9, 3]),
        "negative": np.array([], int),
    }
    named = records.encode(sequences, 11, 12, 13)
    unnamed = records.encode(sequences, 11, 12, None)
    out = records.decode_batch([named, unnamed], [0, 5], "src", {"query": 4, "positive": 5, "negative": 5}, 0)
    np.testing.assert_array_equal(out["positive_ids"], [[2, 8, 9, 3, 0]] * 2)
    np.testing.assert_array_equal(out["query_mask"], [[1, 1, 1, 0]] * 2)
    np.testing.assert_array_equal(out["has_negative"], [0, 0])
    np.testing.assert_array_equal(out["example_id"], [13, records.text_fingerprint("src#5")])


@pytest.mark.slow
def test_beam_prepared_folder_equals_first_use_and_refuses_other_settings(tmp_path):
    files = [_write(tmp_path / "a.jsonl", ROWS[:25]), _write(tmp_path / "b.jsonl", ROWS[25:])]
    output = tmp_path / "prepared"
    command = [
        sys.executable,
        str(REPO / "data_pipelines" / "prepare_data.py"),
        "--config=configs/gecko_minilm.py",
        f"--input={tmp_path}/*.jsonl",
        f"--output={output}",
        "--beam_args=--direct_num_workers=1",
    ]
    subprocess.run(command, check=True, capture_output=True, cwd=REPO)
    assert json.loads((output / prepare.META_FILE).read_text())["num_examples"] == len(ROWS)
    vocabulary = vocabularies.get_vocabulary("minilm")
    fields = {"max_length": 128, "query_max_length": 48, "format": "gecko", "bucket_lengths": True}
    from_folder = pipeline.TrainData(_config(tmp_path, str(output), **fields), vocabulary, 8, 1)
    from_files = pipeline.TrainData(_config(tmp_path, ",".join(files), **fields), vocabulary, 8, 1)
    for k in range(6):
        for key, value in from_files.batch(k).items():
            np.testing.assert_array_equal(from_folder.batch(k)[key], value, err_msg=key)
    with pytest.raises(UserError, match="prepared for other settings"):
        pipeline.TrainData(_config(tmp_path, str(output), max_length=64), vocabulary, 8, 1)
    again = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    assert again.returncode == 2 and "is not empty" in again.stderr.strip().splitlines()[-1]
