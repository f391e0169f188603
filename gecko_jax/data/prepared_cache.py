"""Training sources prepared on first use, cached under a fingerprint of their inputs and settings.

`open_source` gives a `prepared.PreparedSource` for every kind of source:

- a folder prepared by `data_pipelines/prepare_data.py` is opened as is
  (checked against the run's vocabulary, format and lengths);
- anything else (JSONL or TFRecord files, FRet output, the bundled set, the
  TFDS datasets) is prepared once, with a progress bar, into
  `CACHE/NAME-KEY/`, where KEY hashes the source's name, its reader and
  options, its files' absolute paths and the preparation settings.

The entry's meta.json records each input file's size, modification and
change times, inode and SHA-256. A later start reuses the entry when all of
these are unchanged (no reading: any write sets the change time, which no
tool sets back), or else when the SHA-256 still matches (a touched or copied
file); a changed file is prepared again, never silently reused. A lock file keeps two
processes of one machine (a job's hosts on localhost, two runs) from
preparing the same entry at once: the second waits, then reuses it.

CACHE is `data.cache_dir`, else $GECKO_JAX_DATA_CACHE, else
~/.cache/gecko_jax/prepared.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import shutil
from typing import Any, Iterator, Mapping

from absl import logging
import seqio
import tqdm

from gecko_jax.data import mixtures
from gecko_jax.data import prepare
from gecko_jax.data import prepared
from gecko_jax.errors import UserError

CACHE_ENV = "GECKO_JAX_DATA_CACHE"
DEFAULT_CACHE = "~/.cache/gecko_jax/prepared"


def cache_root(data_config: Any) -> str:
    """The folder that holds prepared entries."""
    root = data_config.get("cache_dir", "") or os.environ.get(CACHE_ENV, "") or DEFAULT_CACHE
    return os.path.abspath(os.path.expanduser(root))


def vocabulary_fingerprint(vocabulary: seqio.Vocabulary) -> str:
    """A digest of what decides a vocabulary's tokens: its pieces, or its class and special ids."""
    digest = hashlib.sha256(type(vocabulary).__qualname__.encode())
    model = getattr(vocabulary, "sp_model", None)
    if model is not None:
        digest.update(model)
    elif hasattr(vocabulary, "tokens"):
        digest.update("\n".join(vocabulary.tokens).encode("utf-8"))
    digest.update(
        f"{vocabulary.vocab_size}:{vocabulary.bos_id}:{vocabulary.eos_id}:{vocabulary.pad_id}".encode()
    )
    return digest.hexdigest()[:32]


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _file_state(path: str) -> dict[str, Any]:
    """A file's identity at this moment: absolute path, size, modification time and SHA-256."""
    if "://" in path:
        raise UserError(
            f"{path}: files in a bucket are prepared with data_pipelines/prepare_data.py; train on the "
            "prepared folder (mounted with gcsfuse), or copy the files to a local disk"
        )
    if not os.path.isfile(path):
        raise UserError(f"{path}: training file not found; check the path in --config.data.train_files")
    return {"path": os.path.abspath(path), **_stat(path), "sha256": _sha256(path)}


def _stat(path: str) -> dict[str, int]:
    # Any write to a file sets its change time (ctime), which, unlike the
    # modification time, no tool can set back: equal stats mean equal contents.
    stat = os.stat(path)
    return {
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "ctime_ns": stat.st_ctime_ns,
        "inode": stat.st_ino,
    }


def _unchanged(recorded: Mapping[str, Any]) -> bool:
    """Whether a file still has the contents recorded when its entry was prepared."""
    path = recorded["path"]
    if not os.path.isfile(path):
        return False
    now = _stat(path)
    if now["size"] != recorded["size"]:
        return False
    return all(now[k] == recorded.get(k) for k in now) or _sha256(path) == recorded["sha256"]


def _entry_folder(root: str, source: mixtures.SourceInput, prepared_settings: Mapping[str, Any]) -> str:
    key = json.dumps(
        {
            "source": source.name,
            "identity": source.identity,
            "files": [os.path.abspath(p) for p in source.files],
            "settings": prepared_settings,
        },
        sort_keys=True,
    )
    return os.path.join(root, f"{source.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Holds an exclusive lock on `path` (created if missing), saying so when it has to wait."""
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print(f"Waiting for another process preparing {path.removesuffix('.lock')} ...", flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def open_source(
    source: mixtures.SourceInput,
    vocabulary: seqio.Vocabulary,
    fmt: str,
    lengths: Mapping[str, int],
    root: str,
) -> prepared.PreparedSource:
    """The prepared form of one training source, preparing it first if needed.

    Args:
        source: from `mixtures.source_inputs`.
        vocabulary: tokenizes the formatted texts.
        fmt: one of `formats.FORMATS`.
        lengths: TEXT_FIELDS -> tokens per text, special tokens included.
        root: the cache folder (`cache_root`).

    Returns:
        The opened source.

    Raises:
        UserError: bad input (named by file and line), an unwritable cache, or
            a prepared folder made for other settings.
    """
    prepared_settings = prepare.settings(vocabulary_fingerprint(vocabulary), fmt, lengths)
    if source.prepared_folder is not None:
        return prepared.PreparedSource(source.prepared_folder, prepared_settings)
    entry = _entry_folder(root, source, prepared_settings)
    try:
        os.makedirs(root, exist_ok=True)
        with _locked(entry + ".lock"):
            meta = prepared.read_meta(entry)
            if meta is not None and all(_unchanged(f) for f in meta["inputs"]):
                logging.info("data: %s: prepared data reused from %s", source.name, entry)
            else:
                if meta is not None:
                    print(
                        f"Data source {source.name}: an input file changed since it was prepared; "
                        "preparing it again",
                        flush=True,
                    )
                _prepare(entry, source, vocabulary, fmt, lengths, prepared_settings)
    except PermissionError as e:
        raise UserError(
            f"cannot write the prepared-data cache at {root} ({e.strerror}); set "
            f"--config.data.cache_dir or ${CACHE_ENV} to a writable folder"
        ) from None
    return prepared.PreparedSource(entry, prepared_settings)


def _prepare(
    entry: str,
    source: mixtures.SourceInput,
    vocabulary: seqio.Vocabulary,
    fmt: str,
    lengths: Mapping[str, int],
    prepared_settings: Mapping[str, Any],
) -> None:
    """Prepares `source` into `entry`, replacing what is there only once the new folder is complete."""
    for stale in glob.glob(glob.escape(entry) + ".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)  # Left by a killed run; we hold the lock.
    inputs = [_file_state(path) for path in source.files]  # Before reading: a later edit is then caught.
    partial = f"{entry}.partial-{os.getpid()}"
    with tqdm.tqdm(desc=f"Preparing {source.name}", unit=" examples", mininterval=2.0) as bar:
        try:
            shard = prepare.write_shard(
                source.read(), source.name, vocabulary, fmt, lengths, partial, progress=bar.update
            )
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
    if not shard["examples"]:
        shutil.rmtree(partial, ignore_errors=True)
        raise UserError(
            f"data source {source.name!r} gave no examples; check its files or drop it from the mixture"
        )
    prepare.write_meta(partial, source.name, prepared_settings, [shard], inputs)
    if os.path.isdir(entry):
        replaced = f"{entry}.replaced-{os.getpid()}"
        os.rename(entry, replaced)
        os.rename(partial, entry)
        shutil.rmtree(replaced, ignore_errors=True)
    else:
        os.rename(partial, entry)
