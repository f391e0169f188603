r"""Prepares training files for a config, on Apache Beam: one ArrayRecord shard per input file.

    python data_pipelines/prepare_data.py --config=configs/gemini_embedding.py:prefinetune \
        --input='/data/pairs/part-*.jsonl' --output=/data/prepared/pairs \
        [--source=train_files] [--runner=DirectRunner] [--beam_args=--direct_num_workers=2]

Each input file (JSONL or TFRecord of the training schema) becomes one shard,
formatted, tokenized and packed with the config's vocabulary (`model.vocab`),
`data.format` and lengths (`data.max_length`, `data.query_max_length`) by
the same code that prepares data on first use (`gecko_jax.data.prepare`), in
file order; meta.json is written last, once every shard is complete. Train
on the folder with `--config.data.train_files=OUTPUT` (or
`--config.data.fret_files=OUTPUT` for FRet output); a run whose vocabulary,
format or lengths differ from the preparation's is refused.

On Dataflow, pass `--runner=DataflowRunner` and the usual options in
`--beam_args` (project, region, temp_location, a worker image or
requirements with this package). Inputs may be on GCS; `--output` may be a
gs:// folder too, but ArrayRecord reads local files only, so hosts read the
shards through a Cloud Storage FUSE mount of that folder (as MaxText does).
`--config.FIELD=VALUE` overrides work as in launch/train.py.
"""

import functools

from absl import flags
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from etils import epath
from ml_collections import config_flags

from gecko_jax.data import batch_spec
from gecko_jax.data import mixtures
from gecko_jax.data import prepare
from gecko_jax.data import prepared
from gecko_jax.data import prepared_cache
from gecko_jax.data.vocabularies import get_vocabulary
from gecko_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Training config whose vocabulary, format and lengths to prepare for: configs/NAME.py[:ARG].",
    lock_config=True,
)
_INPUT = flags.DEFINE_string("input", None, "Comma-separated JSONL/TFRecord files or glob patterns.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the prepared source to (new or empty).")
_SOURCE = flags.DEFINE_string(
    "source",
    "train_files",
    "Source name used in example ids (`SOURCE/ID`); "
    "train_files or fret, as the config field that will name the folder.",
)
_RUNNER = flags.DEFINE_string("runner", "DirectRunner", "Beam runner.")
_BEAM_ARGS = flags.DEFINE_list("beam_args", [], "Extra Beam pipeline options, comma-separated.")
flags.mark_flags_as_required(["config", "input", "output"])


class _PrepareFile(beam.DoFn):
    """Prepares one input file into one shard of the output folder."""

    def __init__(
        self,
        vocab_spec: str,
        fmt: str,
        lengths: dict[str, int],
        source: str,
        output: str,
        count: int,
        also_required: tuple[str, ...],
    ):
        super().__init__()
        self._vocab_spec, self._fmt, self._lengths = vocab_spec, fmt, lengths
        self._source, self._output, self._count = source, output, count
        self._also_required = also_required
        self._vocabulary = None

    def setup(self):
        self._vocabulary = get_vocabulary(self._vocab_spec)

    def process(self, element):
        index, path = element
        examples = mixtures.iter_files([path], self._also_required)
        yield prepare.write_shard(
            examples,
            self._source,
            self._vocabulary,
            self._fmt,
            self._lengths,
            self._output,
            index,
            self._count,
        )


def _check_output(output: str) -> None:
    folder = epath.Path(output)
    if folder.exists() and any(folder.iterdir()):
        raise UserError(
            f"--output={output} is not empty; give a new or empty folder (nothing there is replaced)"
        )
    folder.mkdir(parents=True, exist_ok=True)


def main(argv):
    del argv
    config = _CONFIG.value
    paths = mixtures.expand_files(_INPUT.value, "train_files")
    _check_output(_OUTPUT.value)
    vocabulary = get_vocabulary(config.model.vocab)
    lengths = batch_spec.text_lengths(config.data)
    settings = prepare.settings(
        prepared_cache.vocabulary_fingerprint(vocabulary), config.data.format, lengths
    )
    also_required = ("task",) if _SOURCE.value == "fret" else ()
    print(
        f"Preparing {len(paths)} files into {_OUTPUT.value} with {config.model.vocab}, format "
        f"{config.data.format}, lengths {lengths}",
        flush=True,
    )
    output, source = _OUTPUT.value, _SOURCE.value  # Flags are not parsed on remote workers.
    options = PipelineOptions(_BEAM_ARGS.value, runner=_RUNNER.value)
    with beam.Pipeline(options=options) as pipeline:
        _ = (
            pipeline
            | "Files" >> beam.Create(list(enumerate(paths)))
            | "Spread" >> beam.Reshuffle()
            | "Prepare"
            >> beam.ParDo(
                _PrepareFile(
                    config.model.vocab, config.data.format, lengths, source, output, len(paths), also_required
                )
            )
            | "Collect" >> beam.combiners.ToList()
            | "Meta"
            >> beam.Map(
                functools.partial(prepare.write_meta, output, source, settings, inputs={"files": paths})
            )
        )
    meta = prepared.read_meta(output)
    print(
        f"Prepared {meta['num_examples']} examples in {len(meta['shards'])} shards: {_OUTPUT.value}",
        flush=True,
    )


if __name__ == "__main__":
    from gecko_jax import cli  # pylint: disable=g-import-not-at-top

    cli.run(main)
