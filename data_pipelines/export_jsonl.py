r"""Writes named training sources as training JSONL, on Apache Beam.

Turns the sources the recipes read directly (SQuAD question->paragraph pairs,
SNLI triplets, the bundled tiny set) into the JSONL contract of
`--config.data.train_files`, so they can be inspected, filtered, mixed with
other files, or moved to a bucket for a TPU run.

    python data_pipelines/export_jsonl.py --sources=squad,snli \
        --data_dir=../shared/data --output=/tmp/gecko_data/train [--num_shards=4]

writes /tmp/gecko_data/train-00000-of-00004.jsonl ... and prints the counts.
Any Beam runner works: `--runner=DataflowRunner --beam_args=--project=P,--region=R`;
the default is Beam's in-process BundleBasedDirectRunner.
"""

import json
import os

from absl import flags
import apache_beam as beam
import ml_collections
from apache_beam.options.pipeline_options import PipelineOptions

from gecko_jax.config_base import base_config
from gecko_jax.data import mixtures

_SOURCES = flags.DEFINE_list("sources", ["squad", "snli"], f"Any of {mixtures.SOURCE_NAMES}.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Folder laid out like ../shared/data (squad/, snli/, ...).")
_TFDS_DIR = flags.DEFINE_string(
    "tfds_dir", "", "Where TFDS keeps prepared datasets ('' = ~/tensorflow_datasets)."
)
_OUTPUT = flags.DEFINE_string("output", None, "Output prefix; shards get -SSSSS-of-NNNNN.jsonl.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Output files (0 lets the runner choose).")
# The plain DirectRunner of Beam 2.77 first tries to download the Prism runner
# binary, which fails (noisily) on machines without internet.
_RUNNER = flags.DEFINE_string("runner", "BundleBasedDirectRunner", "Beam runner.")
_BEAM_ARGS = flags.DEFINE_list("beam_args", [], "More Beam pipeline options, comma-separated.")
flags.mark_flag_as_required("output")


def _data_config(data_dir: str, tfds_dir: str) -> ml_collections.ConfigDict:
    config = base_config().data
    config.data_dir = data_dir
    config.tfds_dir = tfds_dir
    return config


def _to_line(source: str, example: dict) -> str:
    # The source name rides along as the task when an example has none, so a
    # mixed file still says where each line came from.
    record = {k: v for k, v in example.items() if v is not None}
    record.setdefault("task", source)
    return json.dumps(record, ensure_ascii=False)


def main(argv):
    del argv
    data_config = _data_config(_DATA_DIR.value, _TFDS_DIR.value)
    os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
    options = PipelineOptions(_BEAM_ARGS.value, runner=_RUNNER.value)
    with beam.Pipeline(options=options) as pipeline:
        for name in _SOURCES.value:
            examples = mixtures.load_source(name, data_config)
            lines = (
                pipeline
                | f"Read {name}" >> beam.Create(examples)
                | f"Encode {name}" >> beam.Map(lambda e, n=name: _to_line(n, e))
            )
            _ = (
                lines
                | f"Count {name}" >> beam.combiners.Count.Globally()
                | (f"Report {name}" >> beam.Map(lambda c, n=name: print(f"{n}: {c} examples")))
            )
            if name == _SOURCES.value[0]:
                merged = lines
            else:
                merged = (merged, lines) | f"Merge {name}" >> beam.Flatten()
        _ = merged | "Write" >> beam.io.WriteToText(
            _OUTPUT.value,
            file_name_suffix=".jsonl",
            num_shards=_NUM_SHARDS.value,
            shard_name_template="-SSSSS-of-NNNNN",
        )


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top

    cli.run(main)
