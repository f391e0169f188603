"""Model FLOPs of a batch (MFU's numerator) against a count written out by hand."""

import jax
import numpy as np
import pytest

from gecko_jax.training.model_flops import model_flops
from gecko_jax.training.train_step import param_shapes
from gecko_jax.models.registry import build_tower
from recipe_configs import get_config


def _shapes(config):
    return param_shapes(build_tower(config.model), config.data.max_length)


def test_gemma_counts_matmul_weights_and_windowed_attention():
    config = get_config("gecko_768", "runlocal")
    model = config.model
    counter = model_flops(model, _shapes(config))
    hidden, heads, kv, head_dim = (model.hidden_size, model.num_heads, model.num_kv_heads, model.head_dim)
    per_layer = (
        hidden * heads * head_dim * 2 + hidden * kv * head_dim * 2 + 3 * hidden * model.intermediate_size
    )
    assert counter.token_params == model.num_layers * per_layer
    assert counter.text_params == hidden * model.projection_dim
    assert counter.attention_width == heads * head_dim
    pattern, window = model.sliding_window_pattern, model.sliding_window
    assert counter.context_windows == tuple(
        0 if (i + 1) % pattern == 0 else window for i in range(model.num_layers)
    )

    lengths = np.array([5, 0, window + 7, 1])
    mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
    attended = sum(
        int(np.sum(lengths * (np.minimum(lengths, w) if w else lengths))) for w in counter.context_windows
    )
    expected = (
        6 * (counter.token_params * lengths.sum() + counter.text_params * 3)
        + 12 * counter.attention_width * attended
    )
    assert float(jax.jit(counter.of_texts)(mask)) == pytest.approx(expected, rel=1e-6)


def test_bert_leaves_out_embedding_tables_norms_and_biases():
    config = get_config("jasper_distill", "runlocal")
    model = config.model
    counter = model_flops(model, _shapes(config))
    per_layer = 4 * model.hidden_size**2 + 2 * model.hidden_size * model.intermediate_size
    assert counter.token_params == model.num_layers * per_layer
    assert counter.text_params == model.hidden_size * model.projection_dim
    assert counter.context_windows == (0,) * model.num_layers
    assert float(counter.of_texts(np.zeros((4, 8), np.int32))) == 0.0
