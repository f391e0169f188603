"""Tests for gecko_jax.data.formats: Gecko's unified input format and 'plain'."""

import pytest

from gecko_jax.data import formats
from gecko_jax.errors import UserError


def test_asymmetric_gecko_format():
    example = {
        "query": "who wrote it?",
        "positive": "She wrote it.",
        "negative": "He read it.",
        "task": "question answering",
        "title": "Books",
        "negative_title": "Reading",
    }
    assert formats.format_example(example, "gecko") == {
        "query": "task: question answering | query: who wrote it?",
        "positive": "title: Books | text: She wrote it.",
        "negative": "title: Reading | text: He read it.",
    }


def test_missing_title_and_task_are_written_none():
    example = {"query": "q", "positive": "p", "negative": "n", "title": "Only the positive's"}
    assert formats.format_example(example, "gecko") == {
        "query": "task: none | query: q",
        "positive": "title: Only the positive's | text: p",
        "negative": "title: none | text: n",
    }


def test_symmetric_targets_are_written_like_queries():
    example = {
        "query": "A dog runs.",
        "positive": "A dog is running.",
        "negative": "A dog sleeps.",
        "task": "semantic similarity",
        "title": "ignored",
    }
    assert formats.format_example(example, "gecko") == {
        "query": "task: semantic similarity | query: A dog runs.",
        "positive": "task: semantic similarity | query: A dog is running.",
        "negative": "task: semantic similarity | query: A dog sleeps.",
    }


def test_symmetric_default_and_override():
    assert formats.is_symmetric({"task": "classification"})
    assert not formats.is_symmetric({"task": "question answering"})
    assert not formats.is_symmetric({})
    assert formats.is_symmetric({"task": "question answering", "symmetric": True})
    assert not formats.is_symmetric({"task": "semantic similarity", "symmetric": False})


def test_no_negative_gives_empty_string():
    example = {"query": "q", "positive": "p", "task": "t"}
    assert formats.format_example(example, "gecko")["negative"] == ""
    assert formats.format_example(example, "plain")["negative"] == ""


def test_plain_leaves_texts_unchanged():
    example = {"query": "q", "positive": "p", "negative": "n", "task": "t", "title": "T"}
    assert formats.format_example(example, "plain") == {"query": "q", "positive": "p", "negative": "n"}


def test_helpers():
    assert formats.gecko_query("search result", "x") == "task: search result | query: x"
    assert formats.gecko_document("x") == "title: none | text: x"
    assert formats.gecko_document("x", "T") == "title: T | text: x"


def test_unknown_format():
    with pytest.raises(UserError, match="--config.data.format"):
        formats.format_example({"query": "q", "positive": "p"}, "t5")
