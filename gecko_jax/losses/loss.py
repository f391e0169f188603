"""A training loss: its function and the text fields it reads.

`losses.registry.build_loss` returns one. The train step and GradCache embed
only the loss's `text_fields` of a batch, so a loss that reads the queries
alone (jasper_distill) costs no forward pass over the documents.
"""

import dataclasses
from typing import Callable

import jax

from gecko_jax.data.batch_spec import TEXT_FIELDS

LossFn = Callable[[dict, dict], jax.Array]


@dataclasses.dataclass(frozen=True)
class Loss:
    """A function of (embeddings by text field, batch) to a scalar, and the fields it reads.

    Calling it calls `fn`, so it goes wherever a loss function does (`jax.jit`,
    `jax.value_and_grad`).

    Attributes:
      fn: the loss function.
      text_fields: the fields of `batch_spec.TEXT_FIELDS` it reads, in that order.
    """

    fn: LossFn
    text_fields: tuple[str, ...] = TEXT_FIELDS

    def __call__(self, embeddings: dict, batch: dict) -> jax.Array:
        return self.fn(embeddings, batch)

    def fields_in(self, batch: dict) -> tuple[str, ...]:
        """The fields to embed for `batch`: those the loss reads that the batch holds.

        A batch without hard negatives comes without their arrays (the input
        pipeline leaves out all-padding fields), so their forward pass is skipped.
        """
        return tuple(f for f in self.text_fields if f"{f}_ids" in batch)
