"""Fused attention kernels for the towers, chosen by `model.attention_impl`.

  xla     the towers' own einsum-softmax-einsum (the default). It writes the
          [B, heads, L, L] scores and probabilities to memory, and a local
          layer computes every score before masking most of them away.
  splash  Splash attention, a Pallas kernel for TPU
          (`jax.experimental.pallas.ops.tpu.splash_attention`): the tiled
          online softmax of FlashAttention (Dao et al., arXiv 2205.14135)
          with block-sparse masks, so tiles outside the causal triangle or
          the sliding window are skipped.
  cudnn   cuDNN's flash attention on NVIDIA GPUs, through
          `jax.nn.dot_product_attention(implementation="cudnn")`.

The kernel path is taken only where the kernel exists: Splash when the step is
lowered for a TPU (also ahead of time, from a host without one), cuDNN when
JAX's backend is a GPU. Anywhere else the layer computes the xla attention, so
a workdir trained with a kernel loads and encodes on a CPU, with the same
numbers up to float rounding. Incremental decoding with a KV cache (the
language model) always uses the xla attention. `emulate_fused_kernels` runs
the kernel paths on a CPU for tests: Splash in Pallas interpret mode, and the
very `dot_product_attention` call of the cuDNN path with XLA's implementation.

Padding never takes part. Splash gets segment ids, 1 for real tokens and 0
for padding, and attends only within a segment: a real query sees real keys,
a padding query sees padding (its output is never read). cuDNN gets each
text's count of real tokens, so its padding must come after the text, as the
input pipeline pads (`data.packing`).

Limits, checked by `check_supported` when the model is built:

  splash  no attention-probability dropout (BERT's attention_dropout_rate
          must be 0). Any length: texts are padded to a multiple of 128, the
          kernel's tile, inside the call.
  cudnn   bfloat16 compute (model.dtype), head_dim a multiple of 8 and at most
          256 (128 before Hopper; JAX refuses that case itself), no logit
          soft-capping (Gemma 2), no attention dropout, and no bidirectional
          sliding window shorter than the text (cuDNN's windows look left
          only; refused when a longer text is traced).
"""

import contextlib
import contextvars
import functools
import math
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.sharding import PartitionSpec as P

from gecko_jax.errors import UserError

IMPLEMENTATIONS = ("xla", "splash", "cudnn")
# The kernel's tile along the sequence (TPU vector lanes).
_SPLASH_TILE = 128
_CUDNN_MAX_HEAD_DIM = 256
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)

# The model's own attention, same signature as `fused_attention`'s operands:
# (query [B, L, heads, D], key, value [B, L, kv_heads, D], key_valid [B, L])
# -> context [B, L, heads, D], query unscaled.
XlaAttention = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]

_EMULATE = contextvars.ContextVar("emulate_fused_kernels", default=False)


@contextlib.contextmanager
def emulate_fused_kernels() -> Iterator[None]:
    """Runs the kernel paths on a CPU while functions are traced inside it.

    Splash runs in Pallas interpret mode and the cuDNN path calls
    `jax.nn.dot_product_attention` with implementation 'xla', instead of both
    falling back to the model's xla attention. For parity tests and the
    benchmark's `--tiny` mode; trace a fresh function inside it, since a jitted
    function traced earlier keeps the path it was traced with.
    """
    token = _EMULATE.set(True)
    try:
        yield
    finally:
        _EMULATE.reset(token)


def check_supported(
    impl: str, *, head_dim: int, dtype: Any, softcap: float = 0.0, attention_dropout_rate: float = 0.0
) -> None:
    """Raises a one-line UserError when a model cannot use attention `impl`."""
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"unknown model.attention_impl {impl!r}; use one of {IMPLEMENTATIONS}")
    if impl == "xla":
        return
    if attention_dropout_rate:
        raise UserError(
            f"model.attention_impl={impl!r} has no dropout on attention "
            "probabilities; set --config.model.attention_dropout_rate=0 or use "
            "attention_impl='xla'"
        )
    if impl != "cudnn":
        return
    if jnp.dtype(dtype) not in [jnp.dtype(d) for d in _CUDNN_DTYPES]:
        raise UserError(
            "model.attention_impl='cudnn' needs 16-bit compute; set "
            "--config.model.dtype=bfloat16 or use attention_impl='xla'"
        )
    if head_dim % 8 or head_dim > _CUDNN_MAX_HEAD_DIM:
        raise UserError(
            f"model.attention_impl='cudnn' needs a head dimension that is a multiple "
            f"of 8 and at most {_CUDNN_MAX_HEAD_DIM}, not {head_dim}; use "
            "attention_impl='xla'"
        )
    if softcap:
        raise UserError(
            "model.attention_impl='cudnn' cannot soft-cap attention logits "
            f"(attn_logit_softcap={softcap}); use attention_impl='splash' on TPU or "
            "'xla'"
        )


def fused_attention(
    impl: str,
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    key_valid: jax.Array,
    *,
    scale: float,
    causal: bool,
    window: int,
    softcap: float,
    xla_attention: XlaAttention,
) -> jax.Array:
    """softmax(scale * q k^T) v with `impl`, or `xla_attention` where its kernel does not run.

    Args:
      impl: 'splash' or 'cudnn'.
      query: [B, L, heads, D], unscaled.
      key: [B, L, kv_heads, D]; heads must be a multiple of kv_heads, and
        query head h reads key/value head h // (heads // kv_heads).
      value: as key.
      key_valid: [B, L], 1 for real tokens and 0 for padding.
      scale: multiplies the query (in its dtype) before the scores.
      causal: a query sees only keys at or before it.
      window: a query sees keys less than `window` positions away (before
        it only, when causal); 0 for no window.
      softcap: tanh soft-cap of the scores (Splash only); 0 for none.
      xla_attention: the model's own attention on the same operands.

    Returns:
      [B, L, heads, D] in the dtype of `query`.
    """
    if window >= query.shape[1]:
        window = 0  # The window holds the whole text: the layer is global for it.
    if impl == "splash":
        splash_fn = functools.partial(_splash, scale=scale, causal=causal, window=window, softcap=softcap)
        if _EMULATE.get():
            return splash_fn(query, key, value, key_valid, interpret=True)
        # Picked when lowering, so an ahead-of-time TPU compile from a CPU host
        # gets the kernel and a CPU run the xla attention.
        return jax.lax.platform_dependent(
            query,
            key,
            value,
            key_valid,
            tpu=functools.partial(splash_fn, interpret=False),
            default=xla_attention,
        )
    if impl == "cudnn":
        if _EMULATE.get():
            return _cudnn(
                query, key, value, key_valid, scale=scale, causal=causal, window=window, implementation="xla"
            )
        if jax.default_backend() != "gpu":
            return xla_attention(query, key, value, key_valid)
        return _cudnn(
            query, key, value, key_valid, scale=scale, causal=causal, window=window, implementation="cudnn"
        )
    raise UserError(f"unknown fused attention {impl!r}; use 'splash' or 'cudnn'")


def _cudnn(query, key, value, key_valid, *, scale, causal, window, implementation):
    """jax.nn.dot_product_attention with padding given as real-token counts."""
    if window and not causal:
        raise UserError(
            f"model.attention_impl='cudnn' cannot mask a bidirectional sliding window of "
            f"{window} tokens on {query.shape[1]}-token texts (cuDNN windows look left only); "
            f"keep data.max_length <= {window} or use attention_impl='xla'"
        )
    # At least one key: an all-padding text (a missing hard negative) attends
    # to its first slot instead of dividing by zero; its output is never read.
    lengths = jnp.maximum(jnp.sum(key_valid.astype(jnp.int32), axis=1), 1)
    return jax.nn.dot_product_attention(
        query,
        key,
        value,
        scale=scale,
        is_causal=causal,
        key_value_seq_lengths=lengths,
        local_window_size=(window - 1, 0) if window else None,
        implementation=implementation,
    )


def _splash(query, key, value, key_valid, *, scale, causal, window, softcap, interpret):
    """Splash over the batch, split over the mesh like the layer's activations."""
    length = query.shape[1]
    padded = -(-length // _SPLASH_TILE) * _SPLASH_TILE  # The kernel tiles whole blocks.
    pad = ((0, 0), (0, padded - length))

    def heads_major(x):  # [B, L, heads, D] -> [B, heads, padded, D]
        return jnp.pad(x, pad + ((0, 0), (0, 0))).transpose(0, 2, 1, 3)

    query = query * jnp.asarray(scale, query.dtype)
    segments = jnp.pad(key_valid.astype(jnp.int32), pad)
    run = functools.partial(_splash_local, causal=causal, window=window, softcap=softcap, interpret=interpret)
    out = _over_mesh(run, heads_major(query), heads_major(key), heads_major(value), segments)
    return out.transpose(0, 2, 1, 3)[:, :length]


def _splash_local(query, key, value, segments, *, causal, window, softcap, interpret):
    """Splash on one device's [B, heads, L, D] block of the batch."""
    kernel = _splash_kernel(query.shape[1], query.shape[2], causal, window, softcap, interpret)

    def one_text(q, k, v, ids):
        return kernel(q, k, v, segment_ids=splash.SegmentIds(q=ids, kv=ids))

    return jax.vmap(one_text)(query, key, value, segments)


def _splash_kernel(heads: int, length: int, causal: bool, window: int, softcap: float, interpret: bool):
    """The kernel for one text of `length` (a multiple of the tile).

    Built anew in every trace: its mask tables become values of that trace
    (a cached kernel would leak them into the next one), and building one
    takes a few tens of milliseconds.
    """
    shape = (length, length)
    if window:
        mask = splash.LocalMask(shape, (window - 1, 0 if causal else window - 1), offset=0)
    elif causal:
        mask = splash.CausalMask(shape)
    else:
        mask = splash.FullMask(shape)
    # Larger tiles do more work per grid step; all divide `length`.
    block = next(b for b in (512, 256, _SPLASH_TILE) if length % b == 0)
    blocks = splash.BlockSizes(
        block_q=block,
        block_kv=block,
        block_kv_compute=block,
        block_q_dkv=block,
        block_kv_dkv=block,
        block_kv_dkv_compute=block,
        block_q_dq=block,
        block_kv_dq=block,
    )
    return splash.make_splash_mha(
        splash.MultiHeadMask([mask] * heads),
        block_sizes=blocks,
        head_shards=1,
        q_seq_shards=1,
        attn_logits_soft_cap=softcap or None,
        interpret=interpret,
    )


def _over_mesh(fn, query, key, value, segments):
    """`fn` on each device's rows and heads, under the mesh and logical-axis rules in force.

    A Pallas kernel is one opaque call that XLA's partitioner cannot split, so
    it runs inside `shard_map`: the batch split as the layer's activations
    ('act_batch'), the heads as its parameters ('heads') where both the query
    and key/value heads divide (or there is one key/value head, which every
    device then keeps). A dimension the mesh does not divide stays whole.
    """
    mesh = jax.sharding.get_abstract_mesh()
    rules = nn.get_logical_axis_rules()
    if mesh.empty or not rules:
        return fn(query, key, value, segments)

    def axis(logical, *sizes):
        entry = nn.logical_to_mesh_axes((logical,), rules)[0]
        names = () if entry is None else (entry,) if isinstance(entry, str) else tuple(entry)
        ways = math.prod(mesh.shape[name] for name in names)
        return entry if names and all(size % ways == 0 for size in sizes) else None

    batch = axis("act_batch", query.shape[0])
    shared_kv = key.shape[1] == 1
    heads = axis("heads", query.shape[1], *(() if shared_kv else (key.shape[1],)))
    q_spec, kv_spec = P(batch, heads), P(batch, None if shared_kv else heads)
    return jax.shard_map(
        fn, in_specs=(q_spec, kv_spec, kv_spec, P(batch)), out_specs=q_spec, check_vma=False
    )(query, key, value, segments)
