"""Cheap checks of the model specs FRet's flags name, before a run writes anything.

The pipeline loads its models on the workers, so a bad spec would otherwise
surface only there: amid Beam's traceback and after OUTPUT/run.json is
written. These checks tell specs apart by the rule `Encoder.load` and
`LanguageModel.load` use (`models.specs`), which looks for the file or folder
a spec names without loading weights; an endpoint is not contacted.
"""

from gecko_jax.fret import backends
from gecko_jax.fret.stages import LLMOptions
from gecko_jax.models import specs

_LLM_HELP = (
    "use 'gemma3-270m', 'gguf:PATH' (a .gguf file), 'hf:PATH', an HF Gemma folder, "
    "'openai:MODEL@BASE_URL' or 'gemini:MODEL[@BASE_URL]'"
)


def check_llm(options: LLMOptions) -> None:
    """Refuses an LLM spec that cannot work: what `LanguageModel.load` refuses, or a bad endpoint spec.

    Raises:
      UserError: an unknown or malformed spec, a model that is not there or
        is no Gemma language model.
    """
    if backends.is_http_spec(options.spec):
        # Building the client checks the spec and the key; it sends nothing.
        backends.load_backend(
            options.spec,
            timeout_s=options.timeout_s,
            max_retries=options.max_retries,
            concurrency=options.concurrency,
        )
    else:
        specs.resolve_gemma(options.spec, _LLM_HELP)


def check_embedder(spec: str) -> None:
    """Refuses an embedder spec that `Encoder.load` would refuse, with its message.

    Raises:
      UserError: the spec names none of the accepted forms, or a model that is
        not there.
    """
    specs.resolve(spec)
