"""FRet's pure parts: RRF and relabelling, prompts and parsing, exact search."""

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.evaluation.retrieval import top_k
from gecko_jax.fret import prompts
from gecko_jax.fret import relabel
from gecko_jax.fret.search import exact_top_k
from conftest import REPO  # pylint: disable=g-bad-import-order


def test_rrf_worked_example_by_hand():
    # Four candidates in retrieval order A, B, C, D.
    # QL ranks: B 1, A 2, D 3, C 4.   RC ranks: A 1, C 2, B 3, D 4.
    ql = [-3.0, -1.0, -9.0, -5.0]
    rc = [1.9, 0.7, 1.2, 0.1]
    np.testing.assert_array_equal(relabel.ranks(ql), [2, 1, 4, 3])
    np.testing.assert_array_equal(relabel.ranks(rc), [1, 3, 2, 4])
    # R = 1/r_QL + 1/r_RC: A 1/2+1 = 1.5, B 1+1/3 = 1.333, C 1/4+1/2 = 0.75, D 1/3+1/4 = 0.583.
    fused = relabel.reciprocal_rank_fusion(ql, rc)
    np.testing.assert_allclose(fused, [1.5, 4 / 3, 0.75, 7 / 12])
    choice = relabel.relabel(fused, ["A", "B", "C", "D"], "last", np.random.default_rng(0))
    assert choice.order == (0, 1, 2, 3)
    assert (choice.positive, choice.negative) == (0, 3)


def test_ties_keep_retrieval_order():
    np.testing.assert_array_equal(relabel.ranks([1.0, 2.0, 1.0, 2.0]), [3, 1, 4, 2])
    # A and B tie on R (1 + 1/2 each): the earlier one is the positive.
    fused = relabel.reciprocal_rank_fusion([2.0, 1.0, 0.0], [1.0, 2.0, 0.0])
    assert relabel.relabel(fused, ["a", "b", "c"], "last", np.random.default_rng(0)).positive == 0


def test_random_negative_is_never_the_positive_nor_its_text():
    fused = np.array([0.1, 0.9, 0.5, 0.3, 0.2])
    texts = ["t0", "top", "top", "t3", "t4"]  # Candidate 2 repeats the positive's text.
    seen = set()
    for seed in range(200):
        choice = relabel.relabel(fused, texts, "random", np.random.default_rng(seed))
        assert choice.positive == 1
        seen.add(choice.negative)
    assert seen == {0, 3, 4}
    assert relabel.relabel(fused, texts, "last", np.random.default_rng(0)).negative == 0
    assert relabel.relabel([1.0, 0.5], ["same", "same"], "last", np.random.default_rng(0)) is None
    with pytest.raises(ValueError, match="negative"):
        relabel.relabel(fused, texts, "first", np.random.default_rng(0))


def test_expected_grade_renormalises_over_the_labels():
    log_probs = np.log([[0.2, 0.2, 0.1], [0.0001, 0.0001, 0.5]])
    np.testing.assert_allclose(
        relabel.expected_grade(log_probs, (2, 1, 0)), [(0.4 + 0.2) / 0.5, 0.0003 / 0.5002], rtol=1e-6
    )


def test_prompt_files_parse_and_cover_four_task_families():
    prompt_set = prompts.PromptSet.from_dir(str(REPO / "data_pipelines" / "fret" / "prompts"))
    tasks = " ".join(prompt_set.generate.examples).lower()
    for family in ("answers the question", "search result", "claim", "same meaning"):
        assert family in tasks
    text = prompt_set.generate.render(1, passage="PASSAGE")
    assert text.endswith("Passage: PASSAGE\nTask:")
    # The rotation changes which example comes last, nearest the passage.
    last = {prompt_set.generate.render(r, passage="P").split("----")[0].split("\n\n")[-2] for r in range(4)}
    assert len(last) == 4
    rc = prompt_set.relevance.render(query="Q", passage="P")
    assert rc.endswith("Query: Q\nPassage: P\nRelevance:")
    for label in prompts.RELEVANCE_LABELS:
        assert f"Relevance:{label}" in rc


def test_bad_prompt_files_are_one_line_errors(tmp_path):
    for name in prompts.PROMPT_FILES:
        (tmp_path / name).write_text("instructions\n----\nexample\n----\nPassage: {passage}\n")
    with pytest.raises(UserError, match=r"relevance.txt: .*\{query\}"):
        prompts.PromptSet.from_dir(str(tmp_path))
    (tmp_path / "relevance.txt").unlink()
    with pytest.raises(UserError, match="relevance.txt not found"):
        prompts.PromptSet.from_dir(str(tmp_path))
    with pytest.raises(UserError, match="separated by lines of ----"):
        prompts.parse_prompt("just one section {passage}", "x.txt", ("passage",))


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            " Given a question, find the answer\nQuery: who built it\n",
            ("Given a question, find the answer", "who built it"),
        ),
        ("Find claims\n  query:  is honey forever?", ("Find claims", "is honey forever?")),
        (" Given a question, find the answer\n", None),  # No query line.
        ("\nQuery: who built it", None),  # No task.
        (" task\nQuery: ", None),  # Empty query.
        (" task\nQuery: " + "word " * 80, None),  # Rambling, not a query.
        ("", None),
    ],
)
def test_parse_generation(text, expected):
    assert prompts.parse_generation(text) == expected


def test_passage_text_cuts_words_and_adds_the_title():
    passage = {"id": "1", "title": "Kyoto", "text": "one two three four"}
    assert prompts.passage_text(passage, 2) == "Kyoto. one two"
    assert prompts.passage_text({**passage, "title": ""}, 10) == "one two three four"


def test_exact_top_k_matches_numpy_search_across_blocks():
    rng = np.random.default_rng(0)
    corpus = rng.normal(size=(1000, 16)).astype(np.float32)
    corpus[500] = corpus[10]  # A tie: the lower index comes first.
    queries = rng.normal(size=(37, 16)).astype(np.float32)
    queries[0] = corpus[10]
    scores, indices = exact_top_k(queries, corpus, 20, corpus_block=128, query_block=16)
    want_scores, want_indices = top_k(queries, corpus, 20)
    np.testing.assert_array_equal(indices, want_indices)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)
    assert list(indices[0, :2]) == [10, 500]
    # k above the corpus size returns the whole corpus.
    assert exact_top_k(queries[:2], corpus[:5], 20)[1].shape == (2, 5)
