"""A multilingual request ready for generation: its language's chunks, token ids and bounds.

The multilingual counterpart of text_prep.plan_request, read by ChatterboxTTS.stream for a
model whose front-end is "multilingual": the text is split at the sentence ends of the
request's language (chunking.split_text, chunk length in speaking time for its script),
each chunk goes through the 23-language front-end (text.MultilingualTokenizer: language
tag, lower case, NFKD, the language's step), and each gets a speech-token bound from its
speaking time. Typed `[tags]` are left out (and listed): in this vocabulary a typed
"[en]" or "[cj_a]" would otherwise become that control token.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..constants import MAX_NEW_TOKENS
from ..text_prep import PlannedChunk
from .chunking import max_tokens_for, split_text
from .text import MultilingualTokenizer, check_language

_TAG = re.compile(r"\[[^\[\]\n]{1,80}\]")


@dataclass(frozen=True)
class MultilingualPlan:
    """The chunks of one request (`PlannedChunk.tokens` is a text.MultilingualText) and the
    notes to show with its result (tags left out, language steps this setup skips)."""

    language: str
    items: tuple[PlannedChunk, ...]
    notes: tuple[str, ...]

    @property
    def chunks(self) -> tuple[PlannedChunk, ...]:
        return self.items

    @property
    def normalized_text(self) -> str:
        return " ".join(c.tokens.normalized_text for c in self.items)

    @property
    def unknown_characters(self) -> tuple[str, ...]:
        return tuple(ch for c in self.items for ch in c.tokens.unknown_characters)


def plan_request(text: str, language: str, tokenizer: MultilingualTokenizer,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> MultilingualPlan:
    """Chunks of `text` in `language` (an id of languages.LANGUAGES), tokenised, each with its
    bound `min(max_new_tokens, chunking.max_tokens_for(chunk))`. ValueError for an unsupported
    language or text with nothing to speak."""
    language = check_language(language)
    if not language:
        raise ValueError("choose a language for the multilingual model")
    tags = list(dict.fromkeys(_TAG.findall(text)))
    spoken = " ".join(_TAG.sub(" ", text).split())
    if not any(c.isalnum() for c in spoken):
        raise ValueError("there is nothing to speak: the text has no letters or digits")
    items = []
    for index, chunk in enumerate(split_text(spoken, language)):
        tokens = tokenizer.tokenize(chunk, language)
        limit = min(max_new_tokens, max_tokens_for(tokens.normalized_text, language))
        items.append(PlannedChunk(index, tokens, limit))
    notes = tokenizer.notes_for(language)
    if tags:
        notes = (f"Tags this model does not know were left out: {', '.join(tags)}",) + notes
    return MultilingualPlan(language, tuple(items), notes)
