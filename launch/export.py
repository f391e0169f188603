r"""Writes a model as a sentence-transformers folder.

    python launch/export.py --model=SPEC --output=DIR

SPEC is anything `Encoder.load` takes (a training workdir, `minilm`,
`st:PATH`, `hf:PATH`, `gguf:PATH`, `gemma3-270m`, a folder). Then, with
sentence-transformers installed:

    SentenceTransformer(DIR).encode(texts, prompt_name="query")
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from absl import flags  # pylint: disable=g-import-not-at-top

from gecko_jax import cli  # pylint: disable=g-import-not-at-top

_MODEL = flags.DEFINE_string("model", None, "Model SPEC to export.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to create.")


def main(argv):
    cli.check_args(argv, _MODEL, _OUTPUT)
    # Imported late: JAX and TensorFlow take seconds to start, and bad flags
    # should not wait for them.
    from gecko_jax.export.sentence_transformers import export_model  # pylint: disable=g-import-not-at-top

    export_model(_MODEL.value, _OUTPUT.value, progress=cli.progress_printer("export"))
    print(os.path.abspath(_OUTPUT.value), flush=True)


if __name__ == "__main__":
    cli.run(main)
