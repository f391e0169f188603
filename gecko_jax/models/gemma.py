"""A Gemma-family decoder (Gemma 1, 2 and 3) in Flax linen.

One module covers the three generations; `GemmaConfig.version` picks what
differs between them:

  version 1: pre-norms only, every layer global, RoPE base 10k.
  version 2: pre- and post-norms around attention and MLP, local (sliding
             window) and global layers alternating, attention logits and
             final logits soft-capped (50 and 30 on the released models).
  version 3: as version 2 plus RMS norms on queries and keys (QK-norm), five
             local layers per global one, separate RoPE bases for local
             (10k) and global (1M) layers, no soft-capping.

Common to all: RMSNorm scaled by (1 + w), embeddings multiplied by
sqrt(hidden_size), GeGLU MLP with tanh-approximate GELU, multi-query /
grouped-query attention, and an output layer tied to the token embedding.

The model runs in two attention modes. `causal` is the language model (the
LLM of FRet); `bidirectional` lets every token see the whole text, the way
EmbeddingGemma and the Gecko towers use the backbone. In bidirectional mode
a local layer sees the tokens less than `sliding_window` positions away on
either side. Both modes take a padding mask. `attention_impl` computes either
mode with the model's einsums ('xla') or a fused kernel ('splash' on TPU,
'cudnn' on NVIDIA GPUs; `models.attention`).

Parameter tree and logical axis names (every parameter carries them):

  embedder/embedding              [vocab, H]          ('vocab', 'embed')
  layers_{i}/pre_attention_norm/scale   [H]           ('embed',)
  layers_{i}/attention/q_kernel   [H, heads, D]       ('embed', 'heads', 'kv')
  layers_{i}/attention/{k,v}_kernel [H, kv_heads, D]  ('embed', 'heads', 'kv')
  layers_{i}/attention/out_kernel [heads, D, H]       ('heads', 'kv', 'embed')
  layers_{i}/attention/{q,k}_norm/scale [D]           ('kv',)      (version 3)
  layers_{i}/post_attention_norm/scale  [H]           ('embed',)   (version >= 2)
  layers_{i}/pre_mlp_norm/scale   [H]                 ('embed',)
  layers_{i}/mlp/{gate,up}_kernel [H, I]              ('embed', 'mlp')
  layers_{i}/mlp/down_kernel      [I, H]              ('mlp', 'embed')
  layers_{i}/post_mlp_norm/scale  [H]                 ('embed',)   (version >= 2)
  final_norm/scale                [H]                 ('embed',)

Parameters are float32; `dtype` is the compute dtype. Norm statistics,
attention softmax and logits are float32 whatever `dtype` is.

With `remat` the backward pass of training recomputes each block from its
input instead of keeping its activations (see `_recomputing_block`): the
memory of a long or large batch drops to about one layer's activations.
With `scan_layers` the blocks run as one loop over their stacked weights
(`models.layer_stack`), and remat follows a `jax.checkpoint` policy.

Incremental decoding uses an explicit KV cache (`init_cache`, `decode`): keys
and values per layer plus one key-validity mask, written at `cache_index`
with `dynamic_update_slice`, so a jitted decode step has one static shape.
"""

import dataclasses
import functools
import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from gecko_jax.errors import UserError
from gecko_jax.models import attention
from gecko_jax.models import layer_stack
from gecko_jax.models.activation_sharding import ACT_AXES, constrain

ATTENTION_MODES = ("causal", "bidirectional")
_INIT = nn.initializers.normal(stddev=0.02)
_ZEROS = nn.initializers.zeros_init()
# Masked scores get the most negative float, as in the reference: a query
# whose keys are all masked then attends uniformly instead of giving NaN.
_MASKED = float(jnp.finfo(jnp.float32).min)

# {"valid": [B, S] int32, "layers": [{"k": [B, S, kv_heads, D], "v": ...}]}
Cache = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
    """Shape and generation of a Gemma model.

    Attributes:
      vocab_size: rows of the (tied) token embedding.
      hidden_size: width H of the residual stream.
      num_layers: transformer blocks.
      num_heads: query heads.
      num_kv_heads: key/value heads (1 = multi-query attention).
      head_dim: per-head width D.
      intermediate_size: GeGLU width I.
      version: Gemma generation, 1, 2 or 3.
      norm_eps: RMSNorm epsilon.
      query_pre_attn_scalar: queries are scaled by its inverse square root;
        0 means head_dim.
      sliding_window: span of local layers in tokens; 0 makes every layer
        global.
      sliding_window_pattern: every N-th layer (the last of each group of N)
        is global, the others local (2 on Gemma 2, 6 on Gemma 3, 1 = all
        global).
      rope_global_base: RoPE base of global layers.
      rope_local_base: RoPE base of local layers.
      rope_scaling_factor: linear position scaling of global layers (Gemma 3
        4B+ uses 8); 1 for none.
      attn_logit_softcap: tanh soft-cap of attention scores; 0 for none.
      final_logit_softcap: tanh soft-cap of output logits; 0 for none.
      attention: 'causal' or 'bidirectional'.
      dropout_rate: dropout on each residual branch while training.
      dtype: compute dtype.
      remat: recompute each block's activations in the backward pass instead
        of keeping them (only the block inputs stay in memory).
      remat_policy: with `scan_layers`, what a recomputed block keeps; a key
        of `layer_stack.REMAT_POLICIES` ('full' keeps nothing). Unrolled
        blocks always recompute fully.
      scan_layers: run the blocks as one loop over their stacked weights
        (`models.layer_stack`): one block body to compile instead of
        `num_layers`. Decoding with a cache always runs them unrolled.
      attention_impl: 'xla' (einsums in the model), 'splash' (TPU kernel) or
        'cudnn' (GPU kernel); see `models.attention`. Decoding with a cache
        always uses 'xla'.
    """

    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    version: int = 3
    norm_eps: float = 1e-6
    query_pre_attn_scalar: float = 0
    sliding_window: int = 0
    sliding_window_pattern: int = 1
    rope_global_base: float = 10_000.0
    rope_local_base: float = 10_000.0
    rope_scaling_factor: float = 1.0
    attn_logit_softcap: float = 0.0
    final_logit_softcap: float = 0.0
    attention: str = "causal"
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32
    remat: bool = False
    remat_policy: str = "full"
    scan_layers: bool = False
    attention_impl: str = "xla"

    def __post_init__(self):
        if self.version not in (1, 2, 3):
            raise UserError(f"Gemma version must be 1, 2 or 3; got {self.version}.")
        if self.attention not in ATTENTION_MODES:
            raise UserError(f"Unknown Gemma attention {self.attention!r}; use one of {ATTENTION_MODES}.")
        if self.num_kv_heads < 1 or self.num_heads % self.num_kv_heads:
            raise UserError(
                f"num_heads {self.num_heads} must be a multiple of num_kv_heads {self.num_kv_heads}."
            )
        if self.sliding_window_pattern < 1:
            raise UserError("sliding_window_pattern must be at least 1.")
        layer_stack.check_remat_policy(self.remat_policy)
        attention.check_supported(
            self.attention_impl, head_dim=self.head_dim, dtype=self.dtype, softcap=self.attn_logit_softcap
        )

    def is_local(self, layer: int) -> bool:
        """Whether `layer` attends within the sliding window only."""
        return bool(self.sliding_window) and ((layer + 1) % self.sliding_window_pattern != 0)

    def replace(self, **changes) -> "GemmaConfig":
        return dataclasses.replace(self, **changes)


def _param(module: nn.Module, name: str, init, shape, axes) -> jax.Array:
    return module.param(name, nn.with_logical_partitioning(init, axes), shape, jnp.float32)


def _softcap(x: jax.Array, cap: float) -> jax.Array:
    return jnp.tanh(x / cap) * cap if cap else x


class RMSNorm(nn.Module):
    """RMSNorm with the Gemma (1 + scale) gain; scale starts at zero."""

    eps: float
    axis_name: str = "embed"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = _param(self, "scale", _ZEROS, (x.shape[-1],), (self.axis_name,))
        # Statistics and the gain in float32, then back: this rounding order
        # is the reference's, and matters in bfloat16.
        y = x.astype(jnp.float32)
        y = y * jax.lax.rsqrt(jnp.mean(jnp.square(y), -1, keepdims=True) + self.eps)
        return (y * (1.0 + scale)).astype(x.dtype)


def rope_angles(positions: jax.Array, head_dim: int, base: float, scaling_factor: float = 1.0) -> jax.Array:
    """float32 [B, L, head_dim / 2] RoPE angles of [B, L] integer positions.

    Args:
      positions: integer positions of each token.
      head_dim: width of the rotated heads.
      base: RoPE base (theta).
      scaling_factor: linear scaling; positions are divided by it.
    """
    half = head_dim // 2
    inv_freq = 1.0 / base ** (jnp.arange(0, half, dtype=jnp.float32) * 2 / head_dim)
    return positions.astype(jnp.float32)[..., None] / scaling_factor * inv_freq


def apply_rope(x: jax.Array, angles: jax.Array) -> jax.Array:
    """Rotates [B, L, heads, D] by `rope_angles` [B, L, D / 2] (rotate-half layout).

    Returns:
      The rotated tensor, in the dtype of `x`.
    """
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    first, second = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    rotated = jnp.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)
    return rotated.astype(x.dtype)


def attention_mask(
    config: GemmaConfig, local: bool, query_slots: jax.Array, key_valid: jax.Array
) -> jax.Array:
    """Which keys each query may attend to.

    Slots index the (cache) sequence; with left padding they differ from
    positions by a per-row constant, so distances are the same.

    Args:
      config: the model config (attention mode, window).
      local: whether the layer is a sliding-window layer: a bool, or a traced
        bool scalar when the layer's kind is a loop input (`_by_kind`).
      query_slots: int [Lq] slot of each query.
      key_valid: [B, S] 1 where a key slot holds a real token.

    Returns:
      bool [B, 1, 1, Lq, S] (broadcast over kv heads and groups).
    """
    key_slots = jnp.arange(key_valid.shape[1])
    distance = query_slots[:, None] - key_slots[None, :]
    causal = config.attention == "causal"
    allowed = distance >= 0 if causal else jnp.ones_like(distance, dtype=bool)
    if config.sliding_window and local is not False:
        within = (distance if causal else jnp.abs(distance)) < config.sliding_window
        allowed &= within if local is True else within | jnp.logical_not(local)
    allowed = allowed[None] & key_valid[:, None, :].astype(bool)
    return allowed[:, None, None]


def _by_kind(local, local_value, global_value):
    """`local_value` for a sliding-window layer, else `global_value`.

    `local` is a bool, or a traced bool scalar when scanned layers take their
    kind as a loop input; the choice is then made in the program.
    """
    if isinstance(local, bool):
        return local_value if local else global_value
    return jnp.where(local, local_value, global_value)


class Attention(nn.Module):
    """Grouped-query self-attention with RoPE, optional QK-norm and cache."""

    config: GemmaConfig

    @nn.compact
    def __call__(
        self,
        x: jax.Array,
        positions: jax.Array,
        key_valid: jax.Array,
        query_slots: jax.Array,
        cache: Optional[dict[str, jax.Array]],
        cache_index: jax.Array,
        local: bool | jax.Array,
    ) -> tuple[jax.Array, Optional[dict[str, jax.Array]]]:
        """Returns (output, cache); `local` as for `attention_mask`."""
        cfg = self.config
        dtype = cfg.dtype
        hidden = x.shape[-1]

        def project(name, heads):
            kernel = _param(
                self, f"{name}_kernel", _INIT, (hidden, heads, cfg.head_dim), ("embed", "heads", "kv")
            )
            return jnp.einsum("bld,dhk->blhk", x, kernel.astype(dtype))

        query = project("q", cfg.num_heads)
        key = project("k", cfg.num_kv_heads)
        value = project("v", cfg.num_kv_heads)
        if cfg.version == 3:
            query = RMSNorm(cfg.norm_eps, "kv", name="q_norm")(query)
            key = RMSNorm(cfg.norm_eps, "kv", name="k_norm")(key)
        # Each kind's angles are computed as for a layer of known kind, and
        # `where` picks one: a scanned layer gets the very same numbers.
        angles = _by_kind(
            local,
            rope_angles(positions, cfg.head_dim, cfg.rope_local_base),
            rope_angles(positions, cfg.head_dim, cfg.rope_global_base, cfg.rope_scaling_factor),
        )
        query = apply_rope(query, angles)
        key = apply_rope(key, angles)

        if cache is not None:
            start = (0, cache_index, 0, 0)
            keys = jax.lax.dynamic_update_slice(cache["k"], key.astype(cache["k"].dtype), start)
            values = jax.lax.dynamic_update_slice(cache["v"], value.astype(cache["v"].dtype), start)
            cache = {"k": keys, "v": values}
            key, value = keys.astype(dtype), values.astype(dtype)

        scalar = cfg.query_pre_attn_scalar or cfg.head_dim

        def xla_attention(query, key, value, key_valid, is_local=local):
            batch, length = query.shape[:2]
            groups = cfg.num_heads // cfg.num_kv_heads
            query = query.reshape(batch, length, cfg.num_kv_heads, groups, cfg.head_dim)
            query = query * jnp.asarray(scalar**-0.5, dtype)
            # [B, kv_heads, groups, Lq, S]
            scores = jnp.einsum("bqkgd,bskd->bkgqs", query, key).astype(jnp.float32)
            scores = _softcap(scores, cfg.attn_logit_softcap)
            mask = attention_mask(cfg, is_local, query_slots, key_valid)
            probs = jax.nn.softmax(jnp.where(mask, scores, _MASKED), axis=-1)
            context = jnp.einsum("bkgqs,bskd->bqkgd", probs.astype(dtype), value)
            return context.reshape(batch, length, cfg.num_heads, cfg.head_dim)

        def fused(is_local: bool):
            return functools.partial(
                attention.fused_attention,
                cfg.attention_impl,
                scale=scalar**-0.5,
                causal=cfg.attention == "causal",
                window=cfg.sliding_window if is_local else 0,
                softcap=cfg.attn_logit_softcap,
                xla_attention=functools.partial(xla_attention, is_local=is_local),
            )

        operands = (query, key, value, key_valid)
        if cfg.attention_impl == "xla" or cache is not None:
            context = xla_attention(*operands)
        elif isinstance(local, bool):
            context = fused(local)(*operands)
        elif 0 < cfg.sliding_window < query.shape[1]:
            # A kernel's window is a constant: a scanned layer runs its kind's kernel.
            context = jax.lax.cond(local, fused(True), fused(False), *operands)
        else:
            # The window spans every text, so both kinds attend alike.
            context = fused(False)(*operands)
        out_kernel = _param(
            self, "out_kernel", _INIT, (cfg.num_heads, cfg.head_dim, hidden), ("heads", "kv", "embed")
        )
        out = jnp.einsum("blhk,hkd->bld", context, out_kernel.astype(dtype))
        return out, cache


class Mlp(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x))."""

    config: GemmaConfig

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        shape = (x.shape[-1], cfg.intermediate_size)
        gate = _param(self, "gate_kernel", _INIT, shape, ("embed", "mlp"))
        up = _param(self, "up_kernel", _INIT, shape, ("embed", "mlp"))
        down = _param(self, "down_kernel", _INIT, shape[::-1], ("mlp", "embed"))
        h = nn.gelu(x @ gate.astype(cfg.dtype), approximate=True) * (x @ up.astype(cfg.dtype))
        h = constrain(h, ("act_batch", "act_len", "mlp"))
        return h @ down.astype(cfg.dtype)


class Block(nn.Module):
    """One transformer block with the norms of its generation."""

    config: GemmaConfig
    layer: int

    @nn.compact
    def __call__(self, x, positions, key_valid, query_slots, cache, cache_index, dropout_key, local=None):
        """Returns (x, cache); `dropout_key` None disables dropout.

        `local`, a traced bool scalar, overrides the kind of `layer` for
        scanned layers that take their kind as a loop input.
        """
        cfg = self.config
        if local is None:
            local = cfg.is_local(self.layer)
        post_norms = cfg.version >= 2
        dropout = nn.Dropout(cfg.dropout_rate, deterministic=dropout_key is None)

        def drop(h, site):
            key = None if dropout_key is None else jax.random.fold_in(dropout_key, site)
            return dropout(h, rng=key)

        h = RMSNorm(cfg.norm_eps, name="pre_attention_norm")(x)
        h, cache = Attention(cfg, name="attention")(
            h, positions, key_valid, query_slots, cache, cache_index, local
        )
        if post_norms:
            h = RMSNorm(cfg.norm_eps, name="post_attention_norm")(h)
        x = x + drop(h, 0)
        h = RMSNorm(cfg.norm_eps, name="pre_mlp_norm")(x)
        h = Mlp(cfg, name="mlp")(h)
        if post_norms:
            h = RMSNorm(cfg.norm_eps, name="post_mlp_norm")(h)
        x = x + drop(h, 1)
        return constrain(x, ACT_AXES), cache


def _recomputing_block(block: Block):
    """`block` as f(params, x, positions, key_valid, query_slots, dropout_key) -> x.

    The backward pass keeps only the block's input and recomputes its
    activations from it. `jax.checkpoint` cannot do this on XLA:CPU, which
    drops the optimisation barriers that keep the recomputation apart and then
    merges it with the forward pass by common-subexpression elimination, so
    every activation stays alive. Here the recomputation starts from the input
    plus a zero derived from the incoming gradient: a different expression
    that XLA cannot merge, and that cannot run before that gradient exists.
    """

    def apply(params, x, positions, key_valid, query_slots, dropout_key):
        out, _ = block.apply({"params": params}, x, positions, key_valid, query_slots, None, 0, dropout_key)
        return out

    @jax.custom_vjp
    def run(params, x, *context):
        return apply(params, x, *context)

    def forward(params, x, *context):
        return apply(params, x, *context), (params, x, context)

    def backward(saved, grad_out):
        params, x, context = saved
        zero = (grad_out.reshape(-1)[0] * 0).astype(x.dtype)
        _, pullback = jax.vjp(lambda p, h: apply(p, h, *context), params, x + zero)
        return (*pullback(grad_out), *(None,) * len(context))

    run.defvjp(forward, backward)
    return run


class Gemma(nn.Module):
    """The Gemma backbone; `__call__` has the embedding-tower signature.

    Attributes:
      config: a `GemmaConfig`.
    """

    config: GemmaConfig

    def setup(self):
        cfg = self.config
        self.embedder = nn.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.dtype,
            param_dtype=jnp.float32,
            name="embedder",
            embedding_init=nn.with_logical_partitioning(
                nn.initializers.normal(stddev=1.0), ("vocab", "embed")
            ),
        )
        self.layers = [Block(cfg, i) for i in range(cfg.num_layers)]
        self.final_norm = RMSNorm(cfg.norm_eps)

    def __call__(
        self, input_ids: jax.Array, attention_mask: jax.Array, deterministic: bool = True
    ) -> jax.Array:
        """Returns the final-norm hidden states of right-padded sequences.

        Args:
          input_ids: int32 [B, L] token ids.
          attention_mask: [B, L], 1 for real tokens, 0 for padding.
          deterministic: disables dropout; when False pass a 'dropout' rng.

        Returns:
          [B, L, hidden_size] in the compute dtype.
        """
        positions = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        hidden, _ = self.decode(input_ids, attention_mask, positions, deterministic=deterministic)
        return hidden

    def decode(
        self,
        input_ids: jax.Array,
        attention_mask: jax.Array,
        positions: jax.Array,
        cache: Optional[Cache] = None,
        cache_index: jax.Array | int = 0,
        deterministic: bool = True,
    ) -> tuple[jax.Array, Optional[Cache]]:
        """Runs the model on a chunk of tokens, optionally against a cache.

        Args:
          input_ids: int32 [B, L].
          attention_mask: [B, L], 1 for real tokens.
          positions: int [B, L] RoPE positions of the tokens.
          cache: from `init_cache`, or None to attend within the chunk only.
          cache_index: slot of the chunk's first token in the cache.
          deterministic: disables dropout.

        Returns:
          `(hidden, cache)`: final-norm hidden states [B, L, H] and the
          updated cache (None without one).
        """
        cfg = self.config
        x = self.embedder(input_ids)
        # The reference rounds sqrt(H) to the compute dtype before scaling.
        x = x * jnp.asarray(math.sqrt(cfg.hidden_size), cfg.dtype)
        x = constrain(x, ACT_AXES)
        length = input_ids.shape[1]
        query_slots = cache_index + jnp.arange(length)
        if cache is None:
            key_valid = attention_mask
        else:
            key_valid = jax.lax.dynamic_update_slice(
                cache["valid"], attention_mask.astype(jnp.int32), (0, cache_index)
            )
        # Initialisation creates the parameters through the plain path.
        without_cache = cache is None and not self.is_initializing()
        dropout_keys = [
            None if deterministic or not cfg.dropout_rate else self.make_rng("dropout")
            for _ in range(cfg.num_layers)
        ]
        if without_cache and cfg.scan_layers:
            x = self._scanned_blocks(x, positions, key_valid, query_slots, dropout_keys)
            return self.final_norm(x), None
        layer_caches = []
        for i, layer in enumerate(self.layers):
            if without_cache and cfg.remat:
                params = self.variables["params"][f"layers_{i}"]
                x = _recomputing_block(layer.clone(parent=None))(
                    params, x, positions, key_valid, query_slots, dropout_keys[i]
                )
                layer_caches.append(None)
                continue
            layer_cache = None if cache is None else cache["layers"][i]
            x, layer_cache = layer(
                x, positions, key_valid, query_slots, layer_cache, cache_index, dropout_keys[i]
            )
            layer_caches.append(layer_cache)
        new_cache = None if cache is None else {"valid": key_valid, "layers": layer_caches}
        return self.final_norm(x), new_cache

    def _scanned_blocks(self, x, positions, key_valid, query_slots, dropout_keys):
        """The blocks as one loop over their stacked weights; see `models.layer_stack`."""
        cfg = self.config
        # One block stands for every layer; each layer's kind is a loop input
        # (the block's own, layer 0's, where all are of one kind).
        block = Block(cfg, 0, parent=None)

        def block_fn(params, h, extra):
            dropout_key, local = extra
            out, _ = block.apply(
                {"params": params}, h, positions, key_valid, query_slots, None, 0, dropout_key, local
            )
            return out

        kinds = [cfg.is_local(i) for i in range(cfg.num_layers)]
        # Layers all of one kind keep it a constant (no choice in the program).
        uniform = len(set(kinds)) == 1
        extras = [(key, None if uniform else jnp.asarray(kind)) for key, kind in zip(dropout_keys, kinds)]
        params = [self.variables["params"][f"layers_{i}"] for i in range(cfg.num_layers)]
        return layer_stack.run(block_fn, params, x, extras, cfg.remat_policy if cfg.remat else None)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 [..., vocab] logits from hidden states (tied embedding)."""
        logits = self.embedder.attend(hidden).astype(jnp.float32)
        return _softcap(logits, self.config.final_logit_softcap)


def init_cache(config: GemmaConfig, batch: int, length: int, dtype: Any = jnp.float32) -> Cache:
    """An empty KV cache for `batch` sequences of up to `length` tokens."""
    shape = (batch, length, config.num_kv_heads, config.head_dim)
    return {
        "valid": jnp.zeros((batch, length), jnp.int32),
        "layers": [
            {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_layers)
        ],
    }
