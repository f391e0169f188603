"""data_pipelines/teacher_vectors.py writes a store whose rows are the Encoder's vectors."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from gecko_jax import Encoder
from gecko_jax.data import sources
from gecko_jax.data.teacher_store import TeacherStore, lookup_many
from gecko_jax.errors import UserError

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_store_holds_minilm_vectors_by_id(tmp_path):
    data = sources.bundled_path()
    out = tmp_path / "minilm"
    result = subprocess.run([sys.executable, str(REPO / "data_pipelines" / "teacher_vectors.py"),
                             "--model=minilm", f"--train_files={data}", f"--output={out}",
                             "--batch_size=16"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    store = TeacherStore(str(out))
    examples = sources.tiny()
    assert store.vectors.shape == (len(examples), 384) and store.meta["model"] == "minilm"
    picked = [examples[5], examples[0], examples[17]]
    expected = Encoder.load("minilm").encode([e["query"] for e in picked])
    got = store.lookup([e["id"] for e in picked])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert lookup_many([store, store], [picked[0]["id"]]).shape == (1, 768)
    with pytest.raises(UserError, match="has no vector"):
        store.lookup(["no-such-id"])


def test_missing_store_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="is not a teacher store"):
        TeacherStore(str(tmp_path))
