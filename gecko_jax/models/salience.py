"""AligneR's unary saliences: how much each token takes part in alignment.

AligneR (arXiv 2211.01267, section 3, "unary salience") weights every token of
a query or document by

    u_i = lambda_i * s_i,     s_i = ReLU(w . h_i + b),

with separate (w, b) for queries and documents, and a gate lambda that keeps
about a fraction alpha of the text's m tokens: the solution of the
entropy-regularised linear program

    max_lambda  s^T lambda + eps * H(lambda)
    s.t.        sum(lambda) = k = ceil(alpha * m),   0 <= lambda_i <= 1,

with H(lambda) = -sum_i lambda_i log lambda_i. As eps shrinks, lambda tends to
the indicator of the k largest s_i; for eps > 0 it is smooth in s, so the gate
trains end to end. The paper solves it by block coordinate ascent on the dual,
from a = 0, b = 0:

    a   <- eps * ln k - eps * logsumexp((s + b) / eps)
    b_i <- min(-s_i - a, 0)
    lambda_i = exp((s_i + b_i + a) / eps)

Each `a` step makes the unsaturated mass sum to k; each `b` step caps at 1 the
tokens that went over. The fixed point is lambda_i = min(1, exp((s_i + a) /
eps)) with sum k, which is the optimum of the program (its KKT conditions).
The iteration is run a fixed number of times and differentiated through.

How many times is enough depends on the spread of s measured in eps: a token
is capped once s_i >= -a, and once t >= 1 tokens are capped a step lowers that
threshold -a by at most eps * ln(k / t), so when the largest s_i sit many eps
above the k-th one the gate caps only a few more tokens per step, and an early
stop keeps fewer than k tokens (sum(lambda) < k, never more). `SalienceHeads` starts from uniform
saliences (zero kernel, bias 1), where one step is exact, and the spread grows
as the heads learn.

Padding never counts: it takes no part in the program (m counts real tokens
only) and its salience is 0. A text without real tokens (a missing hard
negative) gets all-zero saliences.
"""

import jax
import jax.numpy as jnp
from flax import linen as nn

# Channels the salience heads add after a multi-vector tower's token vectors:
# the query head's u^q, then the document head's u^d.
QUERY_CHANNEL, DOC_CHANNEL = 0, 1
NUM_CHANNELS = 2

# The paper's settings.
DEFAULT_QUERY_FRACTION = 0.5
DEFAULT_DOC_FRACTION = 0.4
DEFAULT_EPSILON = 0.002
DEFAULT_ITERATIONS = 100

# ceil(alpha * m) must not round 0.1 * 30 = 3.0000000000000004 up to 4.
_ROUNDING = 1e-6


def salience_gate(
    scores: jax.Array, mask: jax.Array, fraction: float, epsilon: float, iterations: int
) -> jax.Array:
    """lambda of the entropy-regularised program, by the paper's unrolled iteration.

    Args:
      scores: float [..., L], the ReLU scores s (any real values work).
      mask: [..., L], 1 for real tokens.
      fraction: alpha; each text keeps k = ceil(alpha * m) of its m real tokens
        (at least 1).
      epsilon: the entropy weight eps.
      iterations: (a, b) updates; see the module docstring.

    Returns:
      float32 [..., L] in [0, 1], 0 on padding and on texts without tokens.
    """
    scores = scores.astype(jnp.float32)
    real = mask > 0
    length = jnp.sum(real, axis=-1, keepdims=True)
    k = jnp.maximum(jnp.ceil(fraction * length.astype(jnp.float32) - _ROUNDING), 1.0)
    # A text without tokens is solved as if every position were real, so that
    # nothing is infinite (where() would pass NaN gradients through), then zeroed.
    empty = length == 0
    real = real | empty
    # lambda does not change when s shifts by a constant; measured from the
    # text's largest score, a and b stay small and float32 keeps its digits,
    # which 1/eps would otherwise magnify.
    top = jnp.max(jnp.where(real, scores, -jnp.inf), axis=-1, keepdims=True)
    scaled = jnp.where(real, scores - jax.lax.stop_gradient(top), 0.0)
    log_k = epsilon * jnp.log(k)

    def update(_, state):
        _, b = state
        logits = jnp.where(real, (scaled + b) / epsilon, -jnp.inf)
        a = log_k - epsilon * jax.nn.logsumexp(logits, axis=-1, keepdims=True)
        return a, jnp.minimum(-scaled - a, 0.0)

    a, b = jax.lax.fori_loop(0, iterations, update, (jnp.zeros_like(log_k), jnp.zeros_like(scaled)))
    # b was set from the last a, so s + b + a = min(s + a, 0): the gate is at
    # most 1, but float32 rounds -s - a + s + a to a hair above 0 (capped
    # tokens carry no gradient through lambda either way).
    gate = jnp.exp(jnp.minimum((scaled + b + a) / epsilon, 0.0))
    return jnp.where(real & ~empty, gate, 0.0)


class SalienceHeads(nn.Module):
    """The query and document salience heads of a multi-vector tower.

    Every text gets both saliences; a loss or a search reads u^q of queries
    and u^d of documents. Computing both costs two dot products per token and
    spares the tower from knowing which texts are queries.

    Attributes:
      query_fraction: alpha^q, the fraction of query tokens the gate keeps.
      doc_fraction: alpha^d, the same for documents.
      epsilon: the entropy weight eps of the gate.
      iterations: iterations of the gate's solver.
    """

    query_fraction: float = DEFAULT_QUERY_FRACTION
    doc_fraction: float = DEFAULT_DOC_FRACTION
    epsilon: float = DEFAULT_EPSILON
    iterations: int = DEFAULT_ITERATIONS

    @nn.compact
    def __call__(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
        """Saliences of every token.

        Args:
          hidden: [B, L, H] backbone states.
          mask: [B, L], 1 for real tokens.

        Returns:
          float32 [B, L, NUM_CHANNELS]: u^q and u^d, 0 on padding.
        """
        hidden = hidden.astype(jnp.float32)
        saliences = []
        for name, fraction in (("query_salience", self.query_fraction), ("doc_salience", self.doc_fraction)):
            # Zero kernel and bias 1: every token starts with s = 1, so the
            # gate is uniform and a pretrained tower scores as ColBERT would.
            scores = nn.relu(
                nn.Dense(
                    1,
                    param_dtype=jnp.float32,
                    name=name,
                    kernel_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed", None)),
                    bias_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (None,)),
                )(hidden)[..., 0]
            )
            gate = salience_gate(scores, mask, fraction, self.epsilon, self.iterations)
            saliences.append(gate * scores)
        return jnp.stack(saliences, axis=-1)


def split_saliences(tokens: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """[..., d + 2] tower output -> (token vectors [..., d], u^q [...], u^d [...])."""
    vectors = tokens[..., :-NUM_CHANNELS]
    saliences = tokens[..., -NUM_CHANNELS:]
    return vectors, saliences[..., QUERY_CHANNEL], saliences[..., DOC_CHANNEL]
