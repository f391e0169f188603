"""gecko_jax: JAX-native training of text embedding models."""

__version__ = "0.1.0"


def __getattr__(name):
    # Imported lazily so that `import gecko_jax` stays cheap for launchers that
    # only need the training loop.
    if name == "Encoder":
        from gecko_jax.encoder import Encoder  # pylint: disable=g-import-not-at-top

        return Encoder
    if name == "LanguageModel":
        from gecko_jax.language_model import LanguageModel  # pylint: disable=g-import-not-at-top

        return LanguageModel
    raise AttributeError(f"module 'gecko_jax' has no attribute {name!r}")
