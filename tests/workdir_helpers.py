"""Training workdirs written directly (config.json and Orbax checkpoints).

They have the layout `launch/train.py` leaves behind, without a training run,
so that tests of what reads workdirs stay fast.
"""

import jax
import numpy as np
from flax.core import meta

from gecko_jax import checkpoint_io
from gecko_jax.config_base import base_config
from gecko_jax.models.registry import build_tower


def tiny_bert_config(**model):
    """A 2-layer BERT on the MiniLM vocabulary, overridable field by field."""
    config = base_config()
    config.model.update(dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, **model))
    config.data.max_length = 24
    return config


def tiny_gemma_config(vocab, vocab_size, **model):
    """A 2-layer bidirectional Gemma 3: a local layer, then a global one."""
    config = base_config()
    config.model.update(
        dict(
            name="gemma",
            vocab=vocab,
            vocab_size=vocab_size,
            hidden_size=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            head_dim=8,
            intermediate_size=48,
            layer_norm_eps=1e-6,
            query_pre_attn_scalar=8.0,
            sliding_window=3,
            sliding_window_pattern=2,
            rope_scaling_factor=4.0,
            dropout_rate=0.0,
            **model,
        )
    )
    config.data.max_length = 24
    return config


def random_params(config, seed=0, scale=0.02):
    """Random parameters in the tree and shapes the tower's init gives.

    Embeddings are N(0, 1) and kernels LeCun-normal, so that tokens stay
    apart and attention is far from uniform: a misplaced weight shows in the
    embeddings. Norm `scale` leaves are 1 + N(0, scale^2) (not plain ones),
    biases N(0, scale^2). The values are drawn in numpy from `jax.eval_shape`:
    running init itself compiles each of its ops (about 30 s per tower on a
    loaded 2-core machine).
    """
    tower = build_tower(config.model)
    ids = jax.ShapeDtypeStruct((1, 8), np.int32)
    shapes = meta.unbox(jax.eval_shape(tower.init, jax.random.key(seed), ids, ids)["params"])
    rng = np.random.RandomState(seed)

    def draw(path, leaf):
        name = path[-1].key
        normal = rng.standard_normal(leaf.shape).astype(np.float32)
        if name == "scale":
            return 1 + scale * normal
        if "embed" in name:
            return normal
        if name.endswith("kernel"):
            # Inputs are the first axis, but [heads, head_dim] for the
            # attention output.
            fan_in = leaf.size // leaf.shape[-1] if name == "out_kernel" else leaf.shape[0]
            return normal / np.float32(np.sqrt(fan_in))
        return scale * normal

    return jax.tree_util.tree_map_with_path(draw, shapes)


def make_workdir(path, config, params_by_step):
    """Writes `config` and a checkpoint per {step: params} entry under `path`."""
    checkpoint_io.write_config(str(path), config)
    manager = checkpoint_io.create_manager(str(path), keep=10, async_save=False)
    for step, params in params_by_step.items():
        state = {"params": params, "step": np.int32(step)}
        checkpoint_io.save(manager, step, state, {"next_batch": step})
    manager.wait_until_finished()
    manager.close()
    return str(path)
