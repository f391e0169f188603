"""FRet's answers to bad input: model specs, reruns with other flags, a dead endpoint.

Each mistake must end the run with one `error: ...` line (no Beam traceback)
and must neither write into the output folder nor keep a corrected rerun from
starting, while the shards and the embedded corpus of an earlier run stay
bound to the flags they were made with.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax.errors import UserError
from gecko_jax.fret import corpus_index
from gecko_jax.fret import model_specs
from gecko_jax.fret import shard_files
from gecko_jax.fret.stages import LLMOptions
from gecko_jax.fret.stages import new_shard
from gecko_jax.pretrained_packages import minilm_folder
from conftest import REPO  # pylint: disable=g-bad-import-order

# Nothing listens on port 1, so a request there is refused at once.
DEAD_ENDPOINT = "openai:m@http://127.0.0.1:1/v1"
RUN = {
    "passages": "p.jsonl",
    "num_passages": 3,
    "llm": DEAD_ENDPOINT,
    "embedder": "bow",
    "corpus_block_size": 8192,
}


def _run_cli(tmp_path, *args):
    passages = tmp_path / "passages.jsonl"
    passages.write_text(
        "".join(
            json.dumps({"id": f"p{i}", "text": f"{topic} facts"}) + "\n"
            for i, topic in enumerate(["river", "castle", "honey"])
        )
    )
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "data_pipelines" / "fret" / "run.py"),
            f"--passages={passages}",
            f"--output={tmp_path / 'out'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--embedder=bow", "error: --embedder: Unknown model 'bow'; use 'minilm'"),
        ("--rerank_llm=bow", "error: --rerank_llm: Unknown model 'bow'; use 'gemma3-270m'"),
    ],
)
def test_bad_model_spec_is_one_line_and_writes_nothing(tmp_path, flag, message):
    result = _run_cli(tmp_path, f"--llm={DEAD_ENDPOINT}", flag)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_dead_endpoint_is_one_line_without_beam_traceback(tmp_path):
    result = _run_cli(tmp_path, f"--llm={DEAD_ENDPOINT}", "--llm_retries=0", "--embedder=minilm")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Connection refused" in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bow", "Unknown model 'bow'"),
        ("st:/no/such/folder", "no folder '/no/such/folder'"),
        ("gguf:/no/such.gguf", "no file '/no/such.gguf'"),
    ],
)
def test_embedder_specs_naming_nothing_are_refused(spec, message):
    with pytest.raises(UserError, match=message):
        model_specs.check_embedder(spec)


def test_embedder_specs_naming_a_model_pass():
    # Every form Encoder.load takes passes too (model_specs_test).
    model_specs.check_embedder("minilm")
    model_specs.check_embedder(f"st:{minilm_folder()}")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bow", "Unknown model 'bow'"),
        ("hf:/no/such/folder", "no folder '/no/such/folder'"),
        ("minilm", "not a Gemma language model"),
        ("openai:m", "needs its server"),
        ("openai:m@ftp://host", "bad LLM spec"),
    ],
)
def test_llm_specs_that_cannot_work_are_refused(spec, message):
    with pytest.raises(UserError, match=message):
        model_specs.check_llm(LLMOptions(spec))


def test_llm_spec_check_contacts_no_endpoint():
    # A dead endpoint passes: only the pipeline's requests can tell.
    model_specs.check_llm(LLMOptions(DEAD_ENDPOINT, max_retries=0))


def _recorded_run(output):
    return json.loads((output / shard_files.RUN_FILE).read_text())


def test_rerun_with_other_flags_proceeds_while_nothing_is_finished(tmp_path):
    shard_files.check_run(str(tmp_path), RUN)
    corrected = dict(RUN, embedder="minilm")
    shard_files.check_run(str(tmp_path), corrected)
    assert _recorded_run(tmp_path) == corrected


def test_a_finished_shard_binds_a_rerun_to_its_flags(tmp_path):
    shard_files.check_run(str(tmp_path), RUN)
    shard_files.write_shard(str(tmp_path), new_shard(0, 1, []))
    with pytest.raises(UserError, match=r"holds shards made with --embedder='bow' \(now 'minilm'\)"):
        shard_files.check_run(str(tmp_path), dict(RUN, embedder="minilm"))
    shard_files.check_run(str(tmp_path), RUN)  # The same flags resume.
    assert _recorded_run(tmp_path) == RUN


def test_an_embedded_corpus_binds_only_the_flags_it_depends_on(tmp_path):
    shard_files.check_run(str(tmp_path), RUN)
    corpus_index.write_block(
        corpus_index.block_prefix(str(tmp_path / shard_files.CORPUS_DIR), 0),
        [{"id": "p0", "title": "", "text": "river facts"}],
        np.ones((1, 4)),
    )
    with pytest.raises(UserError, match=r"holds an embedded corpus made with --embedder='bow'"):
        shard_files.check_run(str(tmp_path), dict(RUN, embedder="minilm"))
    fixed_llm = dict(RUN, llm="openai:m@http://127.0.0.1:8000/v1")
    shard_files.check_run(str(tmp_path), fixed_llm)
    assert _recorded_run(tmp_path) == fixed_llm
