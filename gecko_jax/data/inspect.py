r"""Prints training examples exactly as the model sees them, and the pipeline's speed.

    python -m gecko_jax.data.inspect --config=configs/gecko_minilm.py --num_examples=5

builds the config's input pipeline (same sources, format, vocabulary, lengths
and order as training), decodes the first rows of the first batches back to
text (after formatting and truncation; `...` marks a text cut at its length
limit) and prints how many examples per second the pipeline then delivers.
`--config.FIELD=VALUE` overrides work as in launch/train.py.
"""

import re
import time

from absl import flags
from ml_collections import config_flags
import numpy as np

from gecko_jax import cli
from gecko_jax.data import tasks
from gecko_jax.data.pipeline import TrainData
from gecko_jax.data.pipeline import measure_examples_per_second
from gecko_jax.data.vocabularies import get_vocabulary

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config file (configs/NAME.py[:ARGS]).")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 5, "Examples to print.")
_SPEED_BATCHES = flags.DEFINE_integer("speed_batches", 50, "Batches timed for the examples/s figure.")
flags.mark_flag_as_required("config")


# WordPiece splits punctuation into tokens of its own, so decoding puts a
# space before each; closing punctuation reads naturally attached again.
_SPACE_BEFORE_CLOSING = re.compile(r" ([,.;:!?)\]}])")


def decode_row(vocabulary, ids: np.ndarray, mask: np.ndarray, limit: int) -> str:
    """The text of one packed row without its special tokens; `...` if it reached `limit`.

    Args:
        vocabulary: the pipeline's vocabulary.
        ids: int32 [L], `[bos] tokens [eos] pad...`.
        mask: int32 [L], 1 on [bos .. eos].
        limit: the field's length limit, special tokens included: a row that
            fills it was most likely cut (or is exactly that long). With
            length buckets a row can fill L without reaching the limit.

    Returns:
        The decoded text, or "(none)" for an absent negative.
    """
    used = int(mask.sum())
    if used == 0:
        return "(none)"
    text = _SPACE_BEFORE_CLOSING.sub(r"\1", vocabulary.decode(ids[1 : used - 1].tolist()))
    return text + " ..." if used == limit else text


def describe_examples(data: TrainData, vocabulary, num_examples: int) -> list[str]:
    """Lines describing the first `num_examples` rows of the stream, in order."""
    lines, batch_index = [], 0
    while len(lines) < 4 * num_examples:
        batch = data.batch(batch_index)
        names = data.source_of(data.example_indices(batch_index))
        for row, name in enumerate(names):
            if len(lines) >= 4 * num_examples:
                break
            lines.append(f"[batch {batch_index} row {row}] source: {name}")
            for key in tasks.TEXT_FEATURES:
                if f"{key}_ids" not in batch:  # A batch without any hard negative leaves them out.
                    text = "(none)"
                else:
                    text = decode_row(
                        vocabulary, batch[f"{key}_ids"][row], batch[f"{key}_mask"][row], data.lengths[key]
                    )
                lines.append(f"  {key + ':':9} {text}")
        batch_index += 1
    return lines


def main(argv):
    del argv
    config = _CONFIG.value
    vocabulary = get_vocabulary(config.model.vocab)
    start = time.perf_counter()
    data = TrainData(config.data, vocabulary, config.batch_size, config.seed)
    print(
        f"loaded {data.num_examples} examples from {', '.join(data.source_names)} in "
        f"{time.perf_counter() - start:.1f} s; lengths {data.lengths}",
        flush=True,
    )
    for line in describe_examples(data, vocabulary, _NUM_EXAMPLES.value):
        print(line)
    speed = measure_examples_per_second(data, _SPEED_BATCHES.value)
    print(
        f"input pipeline: {speed:,.0f} examples/s (batch {config.batch_size}, {_SPEED_BATCHES.value} batches)"
    )


if __name__ == "__main__":
    cli.run(main)
