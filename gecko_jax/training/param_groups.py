"""Parameter groups: regexes over parameter paths decide what trains and how fast.

A path is the '/'-joined keys of a parameter, e.g.
`backbone/layer_5/mlp/wi/kernel` or `projection/kernel`. Three config fields
use them (all are tuples of strings, so `--config.optimizer.frozen=...`
works from the command line):

  optimizer.trainable       a parameter trains only if some regex matches
                            it (empty: all train);
  optimizer.frozen          matching parameters never train, even if
                            `trainable` matches them;
  optimizer.lr_multipliers  'REGEX=FACTOR' entries; the first match scales
                            that parameter's learning rate (default 1).

Regexes use `re.search`, so 'layer_[345]/' matches anywhere in the path.
Jasper's stage 1, for instance, is `trainable=('projection',)`.
"""

import re
from typing import Any, Sequence

import jax
from absl import logging

from gecko_jax.errors import UserError

FROZEN = "frozen"


def param_path(key_path) -> str:
    """'/'-joined names of a jax tree path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in key_path)


def _compile(patterns: Sequence[str], field: str) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise UserError(f"optimizer.{field}: {pattern!r} is not a valid regex ({err})") from None
    return compiled


def parse_multipliers(entries: Sequence[str]) -> list[tuple[re.Pattern, float]]:
    """'REGEX=FACTOR' strings -> (compiled regex, factor) pairs."""
    parsed = []
    for entry in entries:
        pattern, sep, factor = entry.rpartition("=")
        try:
            value = float(factor)
        except ValueError:
            value = None
        if not sep or value is None or value < 0:
            raise UserError(
                f"optimizer.lr_multipliers: {entry!r} is not 'REGEX=FACTOR' with a "
                "factor >= 0, e.g. 'layer_5/=0.5'"
            )
        parsed.append((_compile([pattern], "lr_multipliers")[0], value))
    return parsed


def group_labels(
    params: Any, trainable: Sequence[str], frozen: Sequence[str], lr_multipliers: Sequence[str]
) -> Any:
    """A tree like `params` whose leaves are group labels: 'frozen' or a factor as a string.

    Raises:
      UserError: a bad regex, or patterns that leave nothing to train.
    """
    trainable_re = _compile(trainable, "trainable")
    frozen_re = _compile(frozen, "frozen")
    multipliers = parse_multipliers(lr_multipliers)

    def label(key_path, _):
        path = param_path(key_path)
        if trainable_re and not any(r.search(path) for r in trainable_re):
            return FROZEN
        if any(r.search(path) for r in frozen_re):
            return FROZEN
        factor = next((f for r, f in multipliers if r.search(path)), 1.0)
        return FROZEN if factor == 0 else repr(factor)

    labels = jax.tree_util.tree_map_with_path(label, params)
    leaves = jax.tree.leaves(labels)
    if all(leaf == FROZEN for leaf in leaves):
        raise UserError(
            "optimizer.trainable/frozen leave no parameter to train; check the regexes "
            "against paths such as 'backbone/layer_0/mlp/wi/kernel'"
        )
    logging.info("parameter groups: %s", {g: leaves.count(g) for g in sorted(set(leaves))})
    return labels
