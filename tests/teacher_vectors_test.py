"""Teacher vectors end to end: data_pipelines/teacher_vectors.py writes a store, training attaches it.

The attached rows are checked against an independent computation: the teacher
(MiniLM) run on the very token ids of each batch row, so a row given another
example's vector fails.
"""

import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax.data import sources
from gecko_jax.data.teacher_store import TeacherStore
from gecko_jax.errors import UserError
from gecko_jax.models.tower import l2_normalize
from gecko_jax.training import teacher_batches
from gecko_jax.training import trainer

from recipe_configs import get_config

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm_store(tmp_path_factory):
    """A MiniLM store over the jasper_distill:runlocal data (the bundled tiny set)."""
    out = tmp_path_factory.mktemp("teachers") / "minilm"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "data_pipelines" / "teacher_vectors.py"),
            "--model=minilm",
            f"--config={REPO}/configs/jasper_distill.py:runlocal",
            f"--output={out}",
            "--batch_size=32",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return TeacherStore(str(out))


def test_store_holds_minilm_vectors_by_pipeline_key(minilm_store):
    examples = sources.tiny()
    assert minilm_store.vectors.shape == (len(examples), 384)
    assert minilm_store.meta["model"] == "minilm"
    picked = [examples[5], examples[0], examples[17]]
    expected = Encoder.load("minilm").encode([e["query"] for e in picked])
    got = minilm_store.lookup([f"tiny/{e['id']}" for e in picked])
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.slow
def test_training_batches_carry_the_stored_vectors_of_their_examples(minilm_store, tmp_path, monkeypatch):
    seen = []
    attach = teacher_batches.TeacherBatches.__next__

    def recording_next(self):
        batch = attach(self)
        seen.append(batch)
        return batch

    monkeypatch.setattr(teacher_batches.TeacherBatches, "__next__", recording_next)
    config = get_config("jasper_distill", "runlocal")
    config.total_steps = 2
    config.data.max_length = 64  # No query is cut, so the ids hold the whole text.
    config.data.teachers = (minilm_store.folder,)
    trainer.train_and_evaluate(config, str(tmp_path / "run"))

    assert len(seen) == 2
    teacher = Encoder.load("minilm")
    for batch in seen:
        assert batch["query_mask"][:, -1].sum() == 0
        own = teacher.tower.apply({"params": teacher.params}, batch["query_ids"], batch["query_mask"])
        np.testing.assert_allclose(batch["teacher"], np.asarray(l2_normalize(own)), atol=1e-5)


def test_several_teachers_are_normalised_concatenated_and_normalised_again(minilm_store):
    class OneBatch:
        num_examples = 64

        def get_state(self):
            return {"next_batch": 0}

        def example_indices(self, batch_index):
            return np.array([3, 1, 2])

        def __next__(self):
            return {}

    keys = [f"tiny/{e['id']}" for e in sources.tiny()]
    wrapped = teacher_batches.TeacherBatches(OneBatch(), [minilm_store, minilm_store], keys)
    got = next(wrapped)["teacher"]
    raw = minilm_store.lookup([keys[3], keys[1], keys[2]])
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.concatenate([unit, unit], axis=1) / np.sqrt(2), atol=1e-6)
    with pytest.raises(UserError, match="has no vector in teacher store .*teacher_vectors.py"):
        teacher_batches.TeacherBatches(OneBatch(), [minilm_store], ["tiny/no-such-id"] * 64)


def test_wrong_student_width_and_missing_store_are_user_errors(minilm_store, tmp_path):
    config = get_config("jasper_distill", "runlocal")
    config.model.projection_dim = 100
    config.data.teachers = (minilm_store.folder,)
    with pytest.raises(UserError, match="set --config.model.projection_dim=384"):
        teacher_batches.with_teachers(config, object(), str(tmp_path))
    with pytest.raises(UserError, match="is not a teacher store"):
        TeacherStore(str(tmp_path))


def test_jasper_loss_without_teachers_says_what_to_set():
    from gecko_jax.losses.registry import build_loss  # pylint: disable=g-import-not-at-top

    config = get_config("jasper_distill", "runlocal")
    embeddings = {"query": jax.numpy.ones((4, 384))}
    with pytest.raises(UserError, match="set --config.data.teachers"):
        build_loss(config.loss)(embeddings, {})
