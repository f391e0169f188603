"""Test-wide setup: 8 simulated CPU devices, quiet TensorFlow, private compilation and data caches.

The environment is set before JAX is imported anywhere, so every test sees 8
host devices; tests that want one device build their mesh from
`jax.devices()[:1]`.
"""

import atexit
import os
import shutil
import tempfile

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# libtpu (installed for the TPU-topology compile tests) would otherwise try to
# open TPU chips in every process and log errors about the missing TPU VM.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# One compilation cache for the session, in this process and the launch
# scripts the tests start: a recipe several tests train compiles once, and the
# user's own cache (~/.cache/gecko_jax) is left alone.
_COMPILATION_CACHE = tempfile.mkdtemp(prefix="gecko_jax_test_xla_")
atexit.register(shutil.rmtree, _COMPILATION_CACHE, ignore_errors=True)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _COMPILATION_CACHE)
# Likewise one cache of prepared training data, shared by the session's tests.
_DATA_CACHE = tempfile.mkdtemp(prefix="gecko_jax_test_data_")
atexit.register(shutil.rmtree, _DATA_CACHE, ignore_errors=True)
os.environ.setdefault("GECKO_JAX_DATA_CACHE", _DATA_CACHE)

import pathlib  # pylint: disable=g-import-not-at-top,g-bad-import-order

import pytest  # pylint: disable=g-import-not-at-top

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The bundled real data beside the repo; tests using it skip without it."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is not present")
    return SHARED_DATA
