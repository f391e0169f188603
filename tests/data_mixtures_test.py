"""Tests for the academic readers, the TFDS builder and mixtures (gecko_jax.data.{academic,tfds,mixtures})."""

import collections
import os

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from gecko_jax.config_base import base_config
from gecko_jax.data import academic
from gecko_jax.data import jsonl
from gecko_jax.data import mixtures
from gecko_jax.data import tfrecord
from gecko_jax.data.tfds import builder as tfds_builder
from gecko_jax.data.tfds import datasets
from gecko_jax.errors import UserError
from recipe_configs import CONFIGS

SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
needs_shared_data = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA), reason="shared data folder not present"
)


def _data_config(**fields):
    config = base_config().data
    config.update({"mixture": ("tiny",), **fields})
    return config


def _read(name):
    spec = datasets.DATASETS[name]
    return spec.read(datasets.manual_paths(spec, os.path.join(SHARED_DATA, spec.folder)), 0)


# Counts on the shared data: pairs scoring >= 4, one triplet per input, one
# pair per title, one example per correct answer sentence.
_EXPECTED_COUNTS = {
    "stsb": 1406,
    "sick": 1683,
    "banking77": 10003,
    "trec": 5452,
    "mr": 10662,
    "stackoverflow": 20000,
    "wikiqa": 1040,
    "trecqa": 348,
    "snli": 2943,
}


@needs_shared_data
@pytest.mark.parametrize("name", sorted(_EXPECTED_COUNTS))
def test_every_dataset_reads_the_shared_data(name):
    examples = _read(name)
    assert len(examples) == _EXPECTED_COUNTS[name]
    assert all(jsonl.validate_example(e) == e for e in examples)
    assert len({e["id"] for e in examples}) == len(examples)
    assert _read(name) == examples  # Deterministic.


@needs_shared_data
def test_classification_triplets_follow_labels_and_share_an_id_suffix():
    texts, labels = [], []
    for line in academic.read_lines(os.path.join(SHARED_DATA, "trec", "train_5500.label"), "latin-1"):
        label, _, question = line.partition(" ")
        texts.append(question.strip())
        labels.append(label)
    label_of = collections.defaultdict(set)
    for text, label in zip(texts, labels):
        label_of[text].add(label)
    for row, example in enumerate(_read("trec")[:500]):
        suffix = f" [{row}]"
        assert all(example[k].endswith(suffix) for k in ("query", "positive", "negative"))
        query, positive, negative = (example[k][: -len(suffix)] for k in ("query", "positive", "negative"))
        assert query == texts[row] and label_of[positive] & {labels[row]}
        assert labels[row] not in label_of[negative] or len(label_of[negative]) > 1
        assert example["task"] == "classification" and example["symmetric"] is True


@needs_shared_data
def test_similarity_pairs_use_the_documented_threshold():
    lines = academic.read_lines(os.path.join(SHARED_DATA, "stsb", "sts-train.csv"))
    scores = [float(line.split("\t")[4]) for line in lines]
    assert sum(score >= academic.SIMILAR_SCORE for score in scores) == _EXPECTED_COUNTS["stsb"]
    first = _read("stsb")[0]
    assert first == {
        "query": "A plane is taking off.",
        "positive": "An air plane is taking off.",
        "task": "semantic similarity",
        "symmetric": True,
        "id": "stsb-1",
    }


@needs_shared_data
def test_answer_selection_negatives_are_wrong_candidates_of_the_same_question():
    rows = [
        line.split("\t") for line in academic.read_lines(os.path.join(SHARED_DATA, "wikiqa", "train.txt"))
    ]
    wrong = collections.defaultdict(set)
    for question, sentence, label in rows:
        if label.strip() == "0":
            wrong[question.strip()].add(sentence.strip())
    for example in _read("wikiqa"):
        assert (
            example["negative"] in wrong[example["query"]]
            if "negative" in example
            else not wrong[example["query"]]
        )


@needs_shared_data
def test_tfds_builder_equals_the_reader_offline(tmp_path):
    via_tfds = tfds_builder.load("sick", SHARED_DATA, str(tmp_path))
    assert via_tfds == _read("sick")
    assert os.path.isdir(tmp_path / "gecko_academic" / "sick")
    assert (
        tfds_builder.load("sick", "", str(tmp_path)) == via_tfds
    )  # Prepared once, read again without data_dir.


def test_missing_files_fail_fast_without_download(tmp_path):
    with pytest.raises(UserError, match=r"'trec': no train_5500.label in .*--config.data.download=True"):
        tfds_builder.load("trec", str(tmp_path), str(tmp_path / "tfds"))


def test_every_dataset_has_official_urls_for_each_file():
    for spec in datasets.DATASETS.values():
        assert spec.downloads and all(url.startswith("http") for url, _ in spec.downloads.values())
        if spec.read_downloaded is None:
            assert set(spec.downloads) == set(spec.manual_files), spec.name


def test_parse_mixture():
    assert mixtures.parse_mixture(("squad:2", "snli:0.5")) == [("squad", 2.0), ("snli", 0.5)]
    assert mixtures.parse_mixture("tiny, fret") == [("tiny", None), ("fret", None)]
    for bad, message in [
        ("squad:2,snli", "only some entries"),
        ("squad:-1", "positive number"),
        ("squad:x", "positive number"),
        ("nq", "unknown data source 'nq'"),
        ("", "no training data"),
    ]:
        with pytest.raises(UserError, match=message):
            mixtures.parse_mixture(bad)


@pytest.mark.parametrize("value", ["('squad:3','snli:2')", "'squad:3,snli:2'"])
def test_mixture_from_the_command_line(value):
    # The two spellings the README gives for the tuple-typed, locked field.
    argv = ["train.py", f"--config={CONFIGS / 'gecko_minilm.py'}", f"--config.data.mixture={value}"]
    flag_values = flags.FlagValues()
    config = config_flags.DEFINE_config_file("config", flag_values=flag_values, sys_argv=argv)
    flag_values(argv)
    assert mixtures.parse_mixture(config.value.data.mixture) == [("squad", 3.0), ("snli", 2.0)]


def test_train_files_replace_the_mixture_and_read_tfrecord(tmp_path):
    rows = [
        {"query": "q", "positive": "p", "task": "t", "symmetric": True, "id": "a"},
        {"query": "r", "positive": "s", "negative": "n", "negative_title": "nt"},
    ]
    tfrecord.write_tfrecord(str(tmp_path / "a.tfrecord"), rows)
    (tmp_path / "b.jsonl").write_text('{"query": "x", "positive": "y"}\n', encoding="utf-8")
    loaded = mixtures.load_mixture(
        _data_config(train_files=f"{tmp_path}/a.tfrecord, {tmp_path}/b.jsonl", mixture=("squad",))
    )
    assert [(s.name, s.examples) for s in loaded] == [
        ("train_files", rows + [{"query": "x", "positive": "y"}])
    ]
    assert [s.name for s in mixtures.load_mixture(_data_config(mixture=("tiny", "tiny")))] == ["tiny", "tiny"]


def test_bad_tfrecord_names_file_and_record(tmp_path):
    path = str(tmp_path / "bad.tfrecord")
    tfrecord.write_tfrecord(path, [{"query": "q", "positive": "p"}, {"query": "q2", "positive": "p2"}])
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    with tf.io.TFRecordWriter(path) as writer:
        writer.write(tfrecord.to_proto({"query": "q", "positive": "p"}))
        writer.write(
            tf.train.Example(
                features=tf.train.Features(
                    feature={"query": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"q"]))}
                )
            ).SerializeToString()
        )
    with pytest.raises(UserError, match=rf"^{path}: record 2: missing required field \"positive\""):
        tfrecord.read_tfrecord(path)
    (tmp_path / "junk.tfrecord").write_bytes(b"not a record at all")
    with pytest.raises(UserError, match="not a TFRecord file"):
        tfrecord.read_tfrecord(str(tmp_path / "junk.tfrecord"))


def test_fret_rows_need_their_task(tmp_path):
    path = tmp_path / "fret.jsonl"
    path.write_text(
        '{"query": "q", "positive": "p", "task": "search result"}\n{"query": "r", "positive": "s"}\n',
        encoding="utf-8",
    )
    with pytest.raises(UserError, match=rf'^{path}:2: missing required field "task"'):
        mixtures.load_mixture(_data_config(mixture=("fret",), fret_files=str(path)))
    with pytest.raises(UserError, match="fret_files is empty"):
        mixtures.load_mixture(_data_config(mixture=("fret",)))


def test_file_lists_expand_glob_patterns_in_sorted_order(tmp_path):
    for name in ("b", "a"):
        (tmp_path / f"train-{name}.jsonl").write_text(
            f'{{"query": "{name}", "positive": "p"}}\n', encoding="utf-8"
        )
    rows = mixtures.read_files(f"{tmp_path}/train-*.jsonl", "train_files")
    assert [r["query"] for r in rows] == ["a", "b"]
    with pytest.raises(UserError, match=r"fret_files: the pattern .*nothing-\*.jsonl' matches no file"):
        mixtures.read_files(f"{tmp_path}/nothing-*.jsonl", "fret_files")


def test_rates_default_to_source_sizes(tmp_path):
    path = tmp_path / "fret.jsonl"
    path.write_text('{"query": "q", "positive": "p", "task": "search result"}\n', encoding="utf-8")
    loaded = mixtures.load_mixture(_data_config(mixture=("tiny", "fret"), fret_files=str(path)))
    assert [(s.name, s.rate) for s in loaded] == [("tiny", 64.0), ("fret", 1.0)]
    loaded = mixtures.load_mixture(_data_config(mixture=("tiny:3", "fret:1"), fret_files=str(path)))
    assert [s.rate for s in loaded] == [3.0, 1.0]
    assert np.isclose(sum(s.rate for s in loaded), 4.0)
