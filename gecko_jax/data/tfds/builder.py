"""A TFDS builder with one config per dataset of `datasets.DATASETS`.

`gecko_academic/NAME` prepares a dataset's examples (the `jsonl.py` schema,
missing fields as "" and `has_*` flags) into TFRecords under a TFDS data dir.
The raw files come from the manual folder when it has them (offline), else
from the official URLs. `load` prepares once and returns the examples in the
reader's order (TFDS stores them in hashed-key order; a stored `index` restores
it), so the data is identical whether it came through TFDS or not.
"""

import os

import numpy as np
import tensorflow_datasets as tfds

from gecko_jax.data import jsonl
from gecko_jax.data.tfds import datasets
from gecko_jax.errors import UserError

BUILDER_NAME = "gecko_academic"
_TEXT_FIELDS = jsonl.REQUIRED_TEXT_FIELDS + jsonl.OPTIONAL_TEXT_FIELDS
# Draws (negatives, classification partners) are fixed when a dataset is
# prepared, so prepared data does not depend on the run's seed.
PREPARE_SEED = 0


class GeckoAcademic(tfds.core.GeneratorBasedBuilder):
    """The academic sets of the Gecko fine-tuning mixture, in Gecko's example schema."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=spec.name, description=spec.description)
        for spec in datasets.DATASETS.values()
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Offline, pass the folder of the dataset's raw files as manual_dir "
        "(the layout of ../shared/data, e.g. DATA_DIR/banking77/train.csv); "
        "online, the files are downloaded from the official URLs."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        features = {key: tfds.features.Text() for key in _TEXT_FIELDS}
        features.update(id=tfds.features.Text(), symmetric=np.int8, has_symmetric=np.bool_, index=np.int64)
        return self.dataset_info_from_configs(features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        spec = datasets.DATASETS[self.builder_config.name]
        manual_dir = str(dl_manager._manual_dir) if dl_manager._manual_dir else ""  # pylint: disable=protected-access
        paths = datasets.manual_paths(spec, manual_dir) if manual_dir else None
        read = spec.read
        if paths is None:
            paths = download(spec, dl_manager)
            read = spec.read_downloaded or spec.read
        return {"train": self._generate_examples(read(paths, PREPARE_SEED))}

    def _generate_examples(self, examples: list[jsonl.Example]):
        for index, example in enumerate(examples):
            record = {key: example.get(key, "") for key in _TEXT_FIELDS}
            record.update(
                id=str(example.get("id", "")),
                symmetric=int(bool(example.get("symmetric"))),
                has_symmetric="symmetric" in example,
                index=index,
            )
            yield index, record


def download(spec: datasets.DatasetSpec, dl_manager: tfds.download.DownloadManager) -> dict[str, str]:
    """Fetches a dataset's official files; returns file key -> local path."""
    urls = sorted({url for url, _ in spec.downloads.values()})
    fetched = dict(zip(urls, dl_manager.download_and_extract(urls)))
    paths = {}
    for key, (url, inner) in spec.downloads.items():
        paths[key] = os.path.join(str(fetched[url]), inner) if inner else str(fetched[url])
    return paths


def _to_example(record: dict) -> jsonl.Example:
    example = {key: record[key].decode("utf-8") for key in _TEXT_FIELDS if record[key]}
    if record["id"]:
        example["id"] = record["id"].decode("utf-8")
    if record["has_symmetric"]:
        example["symmetric"] = bool(record["symmetric"])
    return example


def load(name: str, data_dir: str, tfds_dir: str, allow_download: bool = False) -> list[jsonl.Example]:
    """Prepares (once) and reads one dataset through the TFDS builder.

    Args:
        name: a key of `datasets.DATASETS`.
        data_dir: the folder holding the manual folders ('' = none).
        tfds_dir: where TFDS keeps prepared data.
        allow_download: fetch from the official URLs when the manual files
            are missing; otherwise that is an error (offline runs fail fast
            instead of waiting on network timeouts).

    Returns:
        The dataset's examples in the reader's order.

    Raises:
        UserError: the files are missing (and downloading is off or failed).
    """
    spec = datasets.DATASETS[name]
    manual_dir = os.path.join(data_dir, spec.folder) if data_dir else ""
    builder = tfds.builder(f"{BUILDER_NAME}/{name}", data_dir=os.path.expanduser(tfds_dir))
    if not builder.is_prepared():
        has_manual = bool(manual_dir) and datasets.manual_paths(spec, manual_dir) is not None
        wanted = " and ".join(" or ".join(names) for names in spec.manual_files.values())
        where = manual_dir or "--config.data.data_dir (not set)"
        if not has_manual and not allow_download:
            raise UserError(
                f"dataset {name!r}: no {wanted} in {where}; set --config.data.data_dir to a folder "
                "laid out like ../shared/data, or --config.data.download=True to fetch it"
            )
        config = tfds.download.DownloadConfig(
            manual_dir=manual_dir if has_manual else None, try_download_gcs=False
        )
        if has_manual:
            builder.download_and_prepare(download_config=config)
        else:
            try:
                builder.download_and_prepare(download_config=config)
            except Exception as e:  # pylint: disable=broad-except
                # Failed downloads surface from deep inside TFDS with many error types.
                raise UserError(
                    f"dataset {name!r}: no {wanted} in {where}, and the download from "
                    f"{next(iter(spec.downloads.values()))[0]} failed ({type(e).__name__}: {e}); "
                    "check the network or give the files in data_dir"
                ) from None
    columns = {}
    # Batched reading: per-example iteration costs about 1 ms an example.
    for batch in tfds.as_numpy(builder.as_dataset(split="train", shuffle_files=False, batch_size=8192)):
        for key, values in batch.items():
            columns.setdefault(key, []).append(values)
    if not columns:
        return []
    columns = {key: np.concatenate(values) for key, values in columns.items()}
    order = np.argsort(columns["index"], kind="stable")
    return [_to_example({key: values[row] for key, values in columns.items()}) for row in order]
