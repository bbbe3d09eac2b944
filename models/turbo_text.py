"""Text front-end of Chatterbox-Turbo: punctuation normalisation, GPT-2 tokens, expression tags.

text --turbo_punc_norm--> normalised text --GPT-2 byte-level BPE (+ 19 tags)--> ids, which T3
reads as they are (no start/stop text tokens). Tags such as `[laugh]` are added tokens, matched
before BPE, so the space in front of a tag becomes its own token. Facts: chatterbox-spec.md §11.2.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .text_tokenizer import PUNCTUATION_REPLACEMENTS, punc_norm

EMPTY_TEXT_STAND_IN = "You need to add some text for me to talk."
MAX_TEXT_TOKENS = 1024  # the tokenizer's model_max_length: the reference truncates there
TEXT_VOCAB_SIZE = 50276  # GPT-2's 50257 ids + 19 tags: T3's text table

# The English table, in its order, less three rules: Turbo keeps "...", " - " and ";" (the
# Turbo model was trained with them).
TURBO_KEPT_PUNCTUATION = ("...", " - ", ";")
TURBO_PUNCTUATION_REPLACEMENTS = tuple(rule for rule in PUNCTUATION_REPLACEMENTS
                                       if rule[0] not in TURBO_KEPT_PUNCTUATION)
WHITESPACE_ONLY_RESULT = "."  # the reference's steps leave nothing of such text but the full stop


def turbo_punc_norm(text: str) -> str:
    """The reference Turbo `punc_norm` (chatterbox-tts 0.1.7 `tts_turbo.py`): the English
    steps (`text_tokenizer.punc_norm`, same sentence enders) with Turbo's replacement table.

    Unlike the English clean-up it never refuses text, as in the reference: empty text
    becomes a stand-in sentence and whitespace-only text a lone "."; callers that should
    refuse such text check before (see `ChatterboxTurbo.generate`).
    """
    if len(text) == 0:
        return EMPTY_TEXT_STAND_IN
    if not text.split():
        return WHITESPACE_ONLY_RESULT
    return punc_norm(text, replacements=TURBO_PUNCTUATION_REPLACEMENTS)


@dataclass(frozen=True)
class TurboTokenizedText:
    """What T3-Turbo receives: the normalised text and its ids; `truncated` if the text had
    more than MAX_TEXT_TOKENS tokens and was cut there (as the reference does)."""

    normalized_text: str
    ids: tuple[int, ...]
    truncated: bool = False
    unknown_characters: tuple[str, ...] = ()  # always empty: byte-level BPE spells any character


class TurboTextTokenizer:
    """The GPT-2 tokenizer of a Turbo checkpoint folder (vocab.json, merges.txt, added_tokens.json,
    special_tokens_map.json, tokenizer_config.json), loaded as the reference loads it.

    `tags` lists every expression tag of the vocabulary (the added, non-special tokens) in id
    order, for a UI to offer as buttons.
    """

    FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        decoder = tokenizer.added_tokens_decoder
        self.tags: tuple[str, ...] = tuple(decoder[i].content for i in sorted(decoder) if not decoder[i].special)

    @classmethod
    def from_dir(cls, ckpt_dir: str | Path) -> "TurboTextTokenizer":
        """Raises FileNotFoundError naming the missing tokenizer files."""
        from transformers import AutoTokenizer

        ckpt_dir = Path(ckpt_dir)
        missing = [name for name in cls.FILES if not (ckpt_dir / name).is_file()]
        if missing:
            raise FileNotFoundError(f"{ckpt_dir} lacks the Turbo tokenizer files {', '.join(missing)}")
        return cls(AutoTokenizer.from_pretrained(str(ckpt_dir), local_files_only=True))

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def tag_ids(self) -> dict[str, int]:
        return {tag: self.tokenizer.convert_tokens_to_ids(tag) for tag in self.tags}

    def encode(self, normalized_text: str) -> list[int]:
        """Ids of already normalised text, cut at MAX_TEXT_TOKENS like the reference."""
        return list(self.tokenizer(normalized_text, truncation=True).input_ids)

    def tokenize(self, raw_text: str) -> TurboTokenizedText:
        normalized = turbo_punc_norm(raw_text)
        full = self.tokenizer(normalized, truncation=False).input_ids
        ids = full[: self.tokenizer.model_max_length]
        return TurboTokenizedText(normalized, tuple(ids), len(full) > len(ids))

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return list(self.tokenizer.convert_ids_to_tokens([int(i) for i in ids]))

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode([int(i) for i in ids])
