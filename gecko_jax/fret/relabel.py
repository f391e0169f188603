"""FRet's rerank fusion and relabelling (Gecko, arXiv 2403.20327: FRet's second step).

For one query and its N retrieved candidates:

* `ranks` turns each scorer's scores into ranks 1..N (best = 1; equal scores
  keep retrieval order, so ranks are a strict order);
* `reciprocal_rank_fusion` gives R = 1/r_QL + 1/r_RC, with no k-offset, as in
  Gecko's Appendix A;
* `relabel` sorts the candidates by R (ties again in retrieval order) and
  takes the top-1 as the positive and, as the hard negative, the candidate at
  rank N ('last') or one drawn uniformly from the others ('random'). A
  negative never has the positive's text, so a corpus with duplicate
  passages cannot make the two equal.
* `expected_grade` turns relevance-label log-probabilities into one RC score:
  the labels' probabilities renormalised over the label set, times their
  grades (Zhuang et al.'s expected relevance).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

NEGATIVE_CHOICES = ("last", "random")


def ranks(scores: Sequence[float]) -> np.ndarray:
    """int [N] ranks, 1 for the highest score; ties go to the earlier candidate."""
    scores = np.asarray(scores, np.float64)
    order = np.lexsort((np.arange(len(scores)), -scores))
    out = np.empty(len(scores), np.int64)
    out[order] = np.arange(1, len(scores) + 1)
    return out


def reciprocal_rank_fusion(*score_lists: Sequence[float]) -> np.ndarray:
    """float [N]: the sum over scorers of 1 / rank."""
    return sum(1.0 / ranks(s) for s in score_lists)


def expected_grade(label_log_probs: np.ndarray, grades: Sequence[float]) -> np.ndarray:
    """[N] expected grade from [N, L] label log-probabilities."""
    logits = np.asarray(label_log_probs, np.float64)
    logits = logits - logits.max(axis=-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=-1, keepdims=True)
    return probs @ np.asarray(grades, np.float64)


@dataclasses.dataclass(frozen=True)
class Relabelled:
    """The outcome for one query: indices into its candidate list."""

    positive: int
    negative: int
    order: tuple[int, ...]  # Candidates by fused score, best first.


def relabel(
    fused: Sequence[float], texts: Sequence[str], negative: str, rng: np.random.Generator
) -> Optional[Relabelled]:
    """Picks the positive and hard negative among the candidates.

    Args:
      fused: [N] fused scores (higher is better), in retrieval order.
      texts: [N] the candidates' texts.
      negative: 'last' (rank N) or 'random' (uniform over the non-positives).
      rng: draws the random negative.

    Returns:
      The choice, or None when every other candidate repeats the positive's
      text (no negative can differ from it).

    Raises:
      ValueError: an unknown `negative`.
    """
    if negative not in NEGATIVE_CHOICES:
        raise ValueError(f"negative must be one of {NEGATIVE_CHOICES}, got {negative!r}")
    order = [int(i) for i in np.argsort(ranks(fused))]
    positive = order[0]
    others = [i for i in order[1:] if texts[i] != texts[positive]]
    if not others:
        return None
    chosen = others[-1] if negative == "last" else others[int(rng.integers(len(others)))]
    return Relabelled(positive, chosen, tuple(order))
