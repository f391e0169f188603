r"""Peak activation memory of a train step against batch size, with and without GradCache.

For each batch size the script compiles the gradient computation of the
all-MiniLM-L6-v2-sized tower under the Gecko loss twice, once plain and once
with GradCache chunks, and prints XLA's own accounting of the temporary
buffers each program needs (`compiled.memory_analysis()`): the peak working
memory beyond parameters and inputs. Nothing is run, so the table is exact
and the same on any host.

    python bench/grad_cache_memory.py [--batch_sizes=32,64,128,256,512] [--chunk_size=32]

With caching the temporary memory should stay flat as the batch grows (only
the [B, D] embeddings and their gradients grow); without it, it grows
linearly with the batch.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
from absl import app
from absl import flags

from gecko_jax.config_base import base_config
from gecko_jax.data.batch_spec import TEXT_FIELDS
from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower
from gecko_jax.training.grad_cache import grad_cache_value_and_grad
from gecko_jax.training.train_step import encode_batch, param_shapes

_BATCHES = flags.DEFINE_list("batch_sizes", ["32", "64", "128", "256", "512"], "Global batch sizes.")
_CHUNK = flags.DEFINE_integer("chunk_size", 32, "GradCache chunk size.")
_QUERY_LENGTH = flags.DEFINE_integer("query_length", 32, "Query tokens.")
_DOC_LENGTH = flags.DEFINE_integer("doc_length", 128, "Positive and negative tokens.")


def _batch_shapes(batch_size: int) -> dict:
    shapes = {"has_negative": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
    for field in TEXT_FIELDS:
        length = _QUERY_LENGTH.value if field == "query" else _DOC_LENGTH.value
        for suffix in ("ids", "mask"):
            shapes[f"{field}_{suffix}"] = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)
    return shapes


def _temp_bytes(fn, params, batch) -> int:
    return jax.jit(fn).lower(params, batch).compile().memory_analysis().temp_size_in_bytes


def main(argv):
    del argv
    config = base_config()
    config.model.dropout_rate = config.model.attention_dropout_rate = 0.0
    config.loss.mrl_dims = (384, 128)
    model = build_tower(config.model)
    loss = build_loss(config.loss)
    params = param_shapes(model, _DOC_LENGTH.value)

    def plain(p, b):
        return jax.value_and_grad(lambda q: loss(encode_batch(model, q, b, deterministic=True), b))(p)

    def cached(p, b):
        return grad_cache_value_and_grad(model, p, b, loss, _CHUNK.value)

    print(
        f"MiniLM-sized tower, queries {_QUERY_LENGTH.value} tokens, documents "
        f"{_DOC_LENGTH.value}, GradCache chunk {_CHUNK.value}; XLA temporary memory (MiB)"
    )
    print(f"{'batch':>6} {'plain':>10} {'gradcache':>10} {'ratio':>7}")
    for batch_size in (int(b) for b in _BATCHES.value):
        batch = _batch_shapes(batch_size)
        plain_mib = _temp_bytes(plain, params, batch) / 2**20
        cached_mib = _temp_bytes(cached, params, batch) / 2**20
        print(
            f"{batch_size:>6} {plain_mib:>10.1f} {cached_mib:>10.1f} {plain_mib / cached_mib:>6.1f}x",
            flush=True,
        )


if __name__ == "__main__":
    app.run(main)
