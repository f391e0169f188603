"""Checks on the texts that users hand to the inference APIs (Encoder, LanguageModel)."""

from typing import Sequence

from gecko_jax.errors import UserError


def check_texts(texts: Sequence[str], what: str = "texts", *, allow_empty: bool = False) -> list[str]:
    """Returns `texts` as a list, or raises a UserError that names the bad item.

    Args:
      texts: a sequence of strings (a bare string is refused: it would be
        read as a sequence of characters).
      what: the argument's name, used in messages.
      allow_empty: accept empty or whitespace-only strings.

    Returns:
      The texts, as a list.
    """
    if isinstance(texts, (str, bytes)):
        raise UserError(f"{what} must be a list of strings, not a single string; wrap it in a list.")
    try:
        texts = list(texts)
    except TypeError:
        raise UserError(f"{what} must be a list of strings; got {type(texts).__name__}.") from None
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(
                f"{what}[{i}] is a {type(text).__name__}, not a str; decode bytes as UTF-8 first."
            )
        if not allow_empty and not text.strip():
            raise UserError(f"{what}[{i}] is empty; drop or fill empty texts first.")
    return texts
