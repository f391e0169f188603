"""Tests for gecko_jax.evaluation.sts: both file layouts, errors, the metric."""

import numpy as np
import pytest
from scipy import stats

from gecko_jax.errors import UserError
from gecko_jax.evaluation import sts


class LookupEncoder:
    """Fake encoder: fixed vectors per text; records what it was asked."""

    def __init__(self, vectors):
        self.vectors = vectors
        self.calls = []

    def encode(self, texts, prompt=None, dim=None, batch_size=None, show_progress=False):
        self.calls.append(dict(texts=list(texts), prompt=prompt, dim=dim, batch_size=batch_size))
        return np.array([self.vectors[t] for t in texts], np.float32)


def _angle_vectors(names, angles):
    # Unit vectors at the given angles from (1, 0): cos(angle) is then the
    # cosine similarity to the reference sentence "ref".
    vectors = {"ref": [1.0, 0.0]}
    for name, angle in zip(names, angles):
        # Scaled by 3 so the test also checks that rows are normalised.
        vectors[name] = [3 * np.cos(angle), 3 * np.sin(angle)]
    return vectors


def _write_stsb(path, rows):
    lines = [
        f"main-news\theadlines\t2016\t{i:04d}\t{score}\t{s1}\t{s2}{extra}"
        for i, (score, s1, s2, extra) in enumerate(rows)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_stsb_layout_ignores_extra_columns_and_quotes(tmp_path):
    path = tmp_path / "sts-dev.csv"
    _write_stsb(
        path,
        [
            (4.0, 'He said "hi', "He said hello", ""),
            (1.5, "A cat.", "A dog.", "\tsource one\tsource two"),
        ],
    )
    data = sts.load_sts(str(path))
    assert data.sentences1 == ['He said "hi', "A cat."]
    assert data.sentences2 == ["He said hello", "A dog."]
    np.testing.assert_array_equal(data.scores, [4.0, 1.5])
    assert data.split is None


def test_sick_all_splits_file_filters_on_semeval_set(tmp_path):
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tSemEval_set"
    rows = ["1\ta\tb\t4.5\tTRAIN", "2\tc\td\t3.0\tTRIAL", "3\te\tf\t1.0\tTEST", "4\tg\th\t2.0\tTEST"]
    (tmp_path / "SICK.txt").write_text("\r\n".join([header] + rows) + "\r\n")
    test = sts.load_sts(str(tmp_path))  # A folder defaults to test.
    assert (test.sentences1, test.split) == (["e", "g"], "test")
    with pytest.raises(UserError, match="1 sentence pair"):
        sts.load_sts(str(tmp_path), split="validation")
    # So does the file itself, rather than mixing the three splits.
    test = sts.load_sts(str(tmp_path / "SICK.txt"))
    assert (test.sentences1, test.split) == (["e", "g"], "test")
    np.testing.assert_array_equal(test.scores, [1.0, 2.0])


@pytest.mark.parametrize(
    "content, message",
    [
        ("a\tb\tc\n", r"x\.csv:1: 3 tab-separated columns"),
        ("g\ts\t2016\t1\t4.0\tA\tB\ng\ts\t2016\t2\tfive\tA\tB\n", r"x\.csv:2: score 'five' is not a number"),
        ("g\ts\t2016\t1\t4.0\tA\t \n", r"x\.csv:1: sentence2 is empty"),
        (
            "pair_ID\tsentence_A\tsentence_B\n1\ta\tb\n",
            r"x\.csv:1: header lacks column\(s\) relatedness_score",
        ),
        (
            "pair_ID\tsentence_A\tsentence_B\trelatedness_score\n1\ta\tb\n",
            r"x\.csv:2: 3 tab-separated columns, the header has 4",
        ),
        ("", r"x\.csv: file is empty"),
    ],
)
def test_malformed_file_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "x.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(UserError, match=message):
        sts.load_sts(str(path))


def test_non_utf8_missing_file_and_missing_split(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("g\ts\t2016\t1\t4.0\tcaf\xe9\tB\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        sts.load_sts(str(path))
    with pytest.raises(UserError, match="no such file"):
        sts.load_sts(str(tmp_path / "absent.csv"))
    with pytest.raises(UserError, match="no test split here"):
        sts.load_sts(str(tmp_path))
    with pytest.raises(UserError, match="unknown split"):
        sts.load_sts(str(tmp_path), split="holdout")


def test_score_sts_is_spearman_of_cosine_and_encodes_each_sentence_once():
    names = ["a", "b", "c", "d"]
    encoder = LookupEncoder(_angle_vectors(names, [0.1, 0.5, 1.0, 1.4]))
    dataset = sts.StsDataset(
        sentences1=["ref"] * 4 + ["a"],
        sentences2=names + ["ref"],
        # Decreasing with the angle except the last, so the ranks differ in
        # exactly one place.
        scores=np.array([5.0, 4.0, 3.0, 2.0, 2.5]),
        path="mem",
        split=None,
    )
    metrics = sts.score_sts(encoder, dataset, prompt="p: ", dim=2, batch_size=3)

    cosine = np.cos([0.1, 0.5, 1.0, 1.4, 0.1])
    assert metrics["spearman"] == pytest.approx(stats.spearmanr(cosine, dataset.scores).statistic)
    assert metrics["spearman"] < 1.0
    assert metrics["cosine_spearman"] == metrics["spearman"]
    assert metrics["pearson"] == pytest.approx(stats.pearsonr(cosine, dataset.scores).statistic, abs=1e-6)
    assert metrics["num_pairs"] == 5
    (call,) = encoder.calls
    assert sorted(call["texts"]) == ["a", "b", "c", "d", "ref"]
    assert (call["prompt"], call["dim"], call["batch_size"]) == ("p: ", 2, 3)


def test_perfect_and_reversed_rankings():
    names = ["a", "b", "c"]
    encoder = LookupEncoder(_angle_vectors(names, [0.2, 0.7, 1.2]))

    def make(scores):
        return sts.StsDataset(["ref"] * 3, names, np.array(scores), "mem", None)

    assert sts.score_sts(encoder, make([3.0, 2.0, 1.0]))["spearman"] == (pytest.approx(1.0))
    assert sts.score_sts(encoder, make([1.0, 2.0, 3.0]))["spearman"] == (pytest.approx(-1.0))


def test_real_stsb_counts(shared_data):
    assert len(sts.load_sts(str(shared_data / "stsb" / "sts-dev.csv")).scores) == 1500
    train = sts.load_sts(str(shared_data / "stsb"), split="train")
    assert len(train.scores) == 5749
    assert train.scores.min() >= 0 and train.scores.max() <= 5


@pytest.mark.parametrize(
    "split, count", [("train", 4500), ("trial", 500), ("dev", 500), ("test", 4927), (None, 4927)]
)
def test_real_sick_counts(shared_data, split, count):
    data = sts.load_sts(str(shared_data / "sick"), split=split)
    assert len(data.scores) == count
    assert data.scores.min() >= 1 and data.scores.max() <= 5
