"""Tests for gecko_jax.data.jsonl: strict JSONL reading with path:line errors."""

import json
from unittest import mock

import pytest

from gecko_jax.data import jsonl
from gecko_jax.errors import UserError


def _write(tmp_path, content, name="train.jsonl"):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(path)


def test_reads_valid_lines_and_skips_blank_ones(tmp_path):
    lines = [
        {"query": "q1", "positive": "p1"},
        {
            "query": "q2",
            "positive": "p2",
            "negative": "n2",
            "task": "fact checking",
            "title": "T",
            "negative_title": "NT",
            "symmetric": False,
            "id": 7,
        },
        {"query": "q3", "positive": "p3", "negative": None, "id": "x"},
    ]
    text = "\ufeff" + json.dumps(lines[0]) + "\n\n  \n" + json.dumps(lines[1]) + "\r\n" + json.dumps(lines[2])
    examples = jsonl.read_jsonl(_write(tmp_path, text))
    assert examples == [lines[0], lines[1], {"query": "q3", "positive": "p3", "id": "x"}]


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"query": "q", "positive": ', "not valid JSON (Expecting value at column 28)"),
        ('["q", "p"]', "expected a JSON object"),
        ('{"positive": "p"}', 'missing required field "query"'),
        ('{"query": "q"}', 'missing required field "positive"'),
        ('{"query": 3, "positive": "p"}', 'field "query" must be a string'),
        ('{"query": "q", "positive": "p", "task": ["qa"]}', 'field "task" must be a string'),
        ('{"query": "q", "positive": "p", "query": "again"}', "duplicate key 'query'"),
        ('{"query": "q", "positive": "p", "id": true}', 'field "id" must be a string or an integer'),
        ('{"query": "q", "positive": "p", "id": 1.5}', 'field "id" must be a string or an integer'),
        ('{"query": "q", "positive": "p", "symmetric": "yes"}', 'field "symmetric" must be true or false'),
        (
            '{"query": "q", "positive": "p", "negative_title": "t"}',
            '"negative_title" is set but there is no "negative"',
        ),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, line, expected):
    path = _write(tmp_path, '{"query": "ok", "positive": "fine"}\n\n' + line + "\n")
    with pytest.raises(UserError) as info:
        jsonl.read_jsonl(path)
    message = str(info.value)
    assert message.startswith(f"{path}:3: ")
    assert expected in message
    assert "\n" not in message


def test_non_utf8_bytes(tmp_path):
    path = _write(tmp_path, b'{"query": "q", "positive": "p"}\n{"query": "caf\xe9", "positive": "p"}\n')
    with pytest.raises(UserError, match=r":2: not valid UTF-8 at byte offset 46 of the file.*re-encode"):
        jsonl.read_jsonl(path)


def test_empty_texts_are_dropped_and_counted_in_one_warning(tmp_path):
    path = _write(
        tmp_path,
        '{"query": "q1", "positive": "p1"}\n'
        '{"query": "  ", "positive": "p2"}\n'
        '{"query": "q3", "positive": "p3", "negative": "", "negative_title": "t"}\n'
        '{"query": "q4", "positive": ""}\n',
    )
    with mock.patch.object(jsonl.logging, "warning") as warning:
        examples = jsonl.read_jsonl(path)
    assert examples == [{"query": "q1", "positive": "p1"}, {"query": "q3", "positive": "p3"}]
    warning.assert_called_once()
    text = warning.call_args.args[0] % warning.call_args.args[1:]
    assert "dropped 2 examples" in text and "1 empty optional texts" in text and "line 2" in text
    with pytest.raises(UserError, match="only empty texts"):
        jsonl.read_jsonl(_write(tmp_path, '{"query": "", "positive": "p"}\n', name="empty.jsonl"))


def test_validate_example_without_counter_rejects_empty_text():
    with pytest.raises(ValueError, match='field "query" is empty'):
        jsonl.validate_example({"query": " ", "positive": "p"})


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="training file not found"):
        jsonl.read_jsonl(str(tmp_path / "nope.jsonl"))
    with pytest.raises(UserError, match="no examples"):
        jsonl.read_jsonl(_write(tmp_path, "\n\n"))


def test_validate_example_returns_a_clean_copy():
    raw = {"query": "q", "positive": "p", "title": None}
    assert jsonl.validate_example(raw) == {"query": "q", "positive": "p"}
    assert raw["title"] is None


def test_unknown_keys_are_ignored_with_one_warning(tmp_path):
    path = _write(
        tmp_path,
        '{"query": "q", "positive": "p", "label": 3}\n'
        '{"query": "r", "positive": "s", "negatve": "n", "label": 1}\n',
    )
    with mock.patch.object(jsonl.logging, "warning") as warning:
        examples = jsonl.read_jsonl(path)
    assert examples == [{"query": "q", "positive": "p"}, {"query": "r", "positive": "s"}]
    warning.assert_called_once()
    text = warning.call_args.args[0] % warning.call_args.args[1:]
    assert "'label' (line 1)" in text and "'negatve' (line 2)" in text


def test_fret_provenance_keys_are_read_past_without_a_warning(tmp_path):
    path = _write(
        tmp_path,
        '{"query": "q", "positive": "p", "task": "t", "positive_id": "7", '
        '"negative_id": "9", "positive_changed": true}\n',
    )
    with mock.patch.object(jsonl.logging, "warning") as warning:
        examples = jsonl.read_jsonl(path)
    assert examples == [{"query": "q", "positive": "p", "task": "t"}]
    warning.assert_not_called()
