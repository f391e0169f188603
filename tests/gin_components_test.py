"""gin swaps components (loss, backbone) while the numbers stay in the ConfigDict."""

import gin
import jax.numpy as jnp
import pytest
from flax import linen as nn

from gecko_jax.config_base import base_config
from gecko_jax.errors import UserError
from gecko_jax.losses.loss import Loss
from gecko_jax.losses.registry import build_loss
from gecko_jax.models.registry import build_tower


def _constant_loss_builder(loss_config):
    return Loss(lambda embeddings, batch: jnp.float32(loss_config.temperature))


class _Embedder(nn.Module):
    hidden: int

    @nn.compact
    def __call__(self, input_ids, attention_mask, deterministic=True):
        del attention_mask, deterministic
        return nn.Embed(10, self.hidden)(input_ids)


@pytest.fixture(autouse=True)
def _clean_gin():
    gin.clear_config()
    yield
    gin.clear_config()


def test_gin_binding_replaces_the_named_loss():
    gin.external_configurable(_constant_loss_builder, "constant_loss_builder")
    gin.parse_config("build_loss.builder = @constant_loss_builder")
    config = base_config().loss
    config.temperature = 0.25
    assert float(build_loss(config)({}, {})) == 0.25


def test_gin_binding_replaces_the_backbone():
    gin.external_configurable(lambda c: _Embedder(hidden=c.hidden_size), "tiny_embedder")
    gin.parse_config("build_tower.backbone_builder = @tiny_embedder")
    model_config = base_config().model
    model_config.hidden_size = 6
    tower = build_tower(model_config)
    assert isinstance(tower.backbone, _Embedder) and tower.backbone.hidden == 6


def test_gin_builder_must_return_a_loss():
    gin.external_configurable(lambda c: lambda embeddings, batch: 0.0, "bare_loss_builder")
    gin.parse_config("build_loss.builder = @bare_loss_builder")
    with pytest.raises(UserError, match="returned function; return gecko_jax.losses.loss.Loss"):
        build_loss(base_config().loss)


def test_unknown_loss_name_is_a_user_error():
    config = base_config().loss
    config.name = "nope"
    with pytest.raises(UserError, match="loss.name='nope' is unknown"):
        build_loss(config)
