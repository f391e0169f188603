"""AligneR's pairwise alignment rules, by name (arXiv 2211.01267, section 3).

A rule says how many document tokens each query token aligns to: `topk:K`
its K most similar ones (`top1` is ColBERT's MaxSim), `topp:P` the best
max(floor(P% * m), 1) of a document's m tokens, so that longer documents get
more alignments. The scoring itself is `losses.aligner`; this module has no
JAX in it, so that command-line tools can check an `--alignment` flag before
JAX starts.
"""

import dataclasses

from gecko_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Alignment:
    """A pairwise alignment rule.

    Attributes:
      kind: 'topk' (a fixed number of document tokens per query token) or
        'topp' (a share of the document's tokens).
      value: K for 'topk'; P, in percent of the document's tokens, for 'topp'
        (to 0.001%).
    """

    kind: str
    value: float

    @property
    def name(self) -> str:
        """The spelling `parse_alignment` reads: top1, topk:K or topp:P."""
        if self.kind == "topk":
            return "top1" if self.value == 1 else f"topk:{int(self.value)}"
        return f"topp:{self.value:g}"


TOP1 = Alignment("topk", 1)

# The paper's few-shot adaptation grid: k in {1, 2, 4, 6, 8} and p in
# {0.5, 1, 1.5, 2}%.
ADAPTATION_GRID = (
    TOP1,
    Alignment("topk", 2),
    Alignment("topk", 4),
    Alignment("topk", 6),
    Alignment("topk", 8),
    Alignment("topp", 0.5),
    Alignment("topp", 1.0),
    Alignment("topp", 1.5),
    Alignment("topp", 2.0),
)


def parse_alignment(text: str, where: str = "--alignment") -> Alignment:
    """Reads `top1`, `topk:K` (K >= 1) or `topp:P` (P in percent, 0 < P <= 100).

    Raises:
      UserError: anything else; the message names `where`.
    """
    kind, _, value = text.partition(":")
    if kind == "top1" and not value:
        return TOP1
    try:
        number = float(value)
    except ValueError:
        number = None
    if kind == "topk" and number is not None and number >= 1 and number == int(number):
        return Alignment("topk", int(number))
    if kind == "topp" and number is not None and 0 < number <= 100:
        return Alignment("topp", number)
    raise UserError(
        f"{where}={text!r}; use top1, topk:K with K >= 1, or topp:P with P a "
        "percentage of the document's tokens in (0, 100], e.g. topp:1.5"
    )
