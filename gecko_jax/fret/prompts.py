"""FRet's three few-shot prompts: generation, query likelihood, relevance.

Each prompt is a text file (data_pipelines/fret/prompts/*.txt) of sections
separated by lines of `----`: the instructions first, then the few-shot
examples, then the template that the pipeline fills in (`{passage}`, and
`{query}` for relevance). The rendered prompt joins the sections with blank
lines.

`generate.txt` ends its template with `Task:`; the LLM continues with the task
description on that line and a `Query: ...` line, which `parse_generation`
reads. The generation examples rotate with the passage (a stable hash of its
id picks the order), because a small model tends to copy the task of the
example nearest the passage: rotating spreads the generated tasks over the
four families (question answering, search results, fact checking, sentence
similarity) instead of one.
"""

import dataclasses
import os
import re
import zlib
from typing import Optional

from gecko_jax.errors import UserError

PROMPT_FILES = ("generate.txt", "query_likelihood.txt", "relevance.txt")
_SEPARATOR = re.compile(r"^----\s*$", re.MULTILINE)

# Relevance labels by the word that starts them (a single Gemma token each, so
# one forward pass reads all three) and their grades (Zhuang et al.'s
# fine-grained labels, cited by Gecko).
RELEVANCE_LABELS = (" Highly", " Somewhat", " Not")
RELEVANCE_GRADES = (2.0, 1.0, 0.0)

# Generated text past these starts the next example, not this one.
GENERATION_STOPS = ("\n\n", "\nPassage:", "----")

# A "query" longer than this is the model rambling, not a query.
_MAX_QUERY_WORDS = 64


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One prompt file, split into its parts."""

    instructions: str
    examples: tuple[str, ...]
    template: str

    def render(self, rotation: int = 0, **fields: str) -> str:
        """The full prompt with the examples rotated left by `rotation`."""
        shift = rotation % len(self.examples) if self.examples else 0
        examples = self.examples[shift:] + self.examples[:shift]
        return "\n\n".join((self.instructions,) + examples + (self.template.format(**fields),))


def parse_prompt(text: str, path: str, fields: tuple[str, ...]) -> Prompt:
    """Splits a prompt file's text; `fields` are the placeholders its template needs."""
    sections = [s.strip("\n") for s in _SEPARATOR.split(text)]
    if len(sections) < 2 or not all(s.strip() for s in sections):
        raise UserError(
            f"{path}: a prompt file needs instructions, examples and a template "
            "separated by lines of ----, none of them empty"
        )
    template = sections[-1]
    for field in fields:
        if "{" + field + "}" not in template:
            raise UserError(f"{path}: the last section (the template) must contain {{{field}}}")
    return Prompt(sections[0], tuple(sections[1:-1]), template)


@dataclasses.dataclass(frozen=True)
class PromptSet:
    """The three prompts of a FRet run."""

    generate: Prompt
    query_likelihood: Prompt
    relevance: Prompt

    @classmethod
    def from_dir(cls, folder: str) -> "PromptSet":
        """Reads generate.txt, query_likelihood.txt and relevance.txt from `folder`."""
        texts = []
        for name in PROMPT_FILES:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                raise UserError(f"{path} not found; --prompts_dir must hold {', '.join(PROMPT_FILES)}")
            with open(path, encoding="utf-8") as f:
                texts.append((f.read(), path))
        return cls(
            parse_prompt(*texts[0], ("passage",)),
            parse_prompt(*texts[1], ("passage",)),
            parse_prompt(*texts[2], ("passage", "query")),
        )


def passage_text(passage: dict, max_words: int) -> str:
    """A passage as the prompts show it: title and text, cut to `max_words` words."""
    words = passage["text"].split()
    text = " ".join(words[:max_words])
    return f"{passage['title']}. {text}" if passage.get("title") else text


def rotation_for(passage_id: str) -> int:
    """A stable per-passage example rotation (crc32 is the same on every worker)."""
    return zlib.crc32(str(passage_id).encode("utf-8"))


def parse_generation(text: str) -> Optional[tuple[str, str]]:
    """Reads (task, query) from the LLM's continuation of `Task:`.

    Args:
      text: the generated text, starting right after `Task:`.

    Returns:
      (task, query), or None when the text has no usable task and query.
    """
    lines = text.strip().split("\n")
    task = lines[0].strip()
    query = None
    for line in lines[1:]:
        if line.strip().lower().startswith("query:"):
            query = line.strip()[len("query:") :].strip()
            break
    if not task or not query or task.lower().startswith("query:"):
        return None
    if len(query.split()) > _MAX_QUERY_WORDS:
        return None
    return task, query
