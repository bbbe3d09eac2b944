"""Text front-end of the English model: punctuation normalisation and BPE token ids.

text --punc_norm--> normalised text --spaces to [SPACE]--> BPE ids (no SOT/EOT; T3 adds them).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tokenizers import Tokenizer

from .constants import SPACE_TEXT_TOKEN as SPACE
from .constants import START_TEXT_TOKEN as START_TEXT
from .constants import STOP_TEXT_TOKEN as STOP_TEXT
from .constants import UNK_TEXT_TOKEN as UNK

START_TOKEN, STOP_TOKEN, UNK_TOKEN, SPACE_TOKEN = "[START]", "[STOP]", "[UNK]", "[SPACE]"

# Applied in this order, after whitespace collapsing (so "a; b" becomes "a,  b").
PUNCTUATION_REPLACEMENTS = (
    ("...", ", "),
    ("\u2026", ", "),  # ellipsis
    (":", ","),
    (" - ", ", "),
    (";", ", "),
    ("\u2014", "-"),  # em dash
    ("\u2013", "-"),  # en dash
    (" ,", ","),
    ("\u201c", '"'),
    ("\u201d", '"'),
    ("\u2018", "'"),
    ("\u2019", "'"),
)
_SENTENCE_ENDERS = (".", "!", "?", "-", ",")


def punc_norm(text: str, sentence_enders: tuple[str, ...] = _SENTENCE_ENDERS,
              replacements: tuple[tuple[str, str], ...] = PUNCTUATION_REPLACEMENTS) -> str:
    """The reference punctuation clean-up, step for step.

    Text not ending with one of `sentence_enders` gets a "." appended (the multilingual
    model passes its longer list); `replacements` are applied in order after whitespace
    collapsing (Turbo passes its shorter table). Unlike the reference, which speaks a canned
    sentence for empty input, empty or whitespace-only text raises ValueError.
    """
    if not text.split():
        raise ValueError("text is empty: there is nothing to speak")
    # Capitalisation looks at the raw first character, before whitespace is collapsed.
    if text[0].islower():
        text = text[0].upper() + text[1:]
    text = " ".join(text.split())
    for old, new in replacements:
        text = text.replace(old, new)
    text = text.rstrip(" ")
    if not text.endswith(sentence_enders):
        text += "."
    return text


@dataclass(frozen=True)
class TokenizedText:
    """What the pipeline feeds T3: the normalised text, its ids (without SOT/EOT), and
    every character occurrence that became [UNK], in text order."""

    normalized_text: str
    ids: tuple[int, ...]
    unknown_characters: tuple[str, ...]


class TextTokenizer:
    """The English BPE tokenizer (`tokenizer.json`) with the reference's space handling.

    Owns the `tokenizers.Tokenizer` and the special ids read from the file. It does not
    normalise text (see `punc_norm`) nor add SOT/EOT (`with_start_stop`). Characters
    outside the vocabulary become [UNK]; `unknown_characters` names them.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer = tokenizer
        ids = {name: tokenizer.token_to_id(name) for name in (START_TOKEN, STOP_TOKEN, UNK_TOKEN, SPACE_TOKEN)}
        missing = [name for name, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer vocabulary lacks {', '.join(missing)}")
        self.start_id: int = ids[START_TOKEN]
        self.stop_id: int = ids[STOP_TOKEN]
        self.unk_id: int = ids[UNK_TOKEN]
        self.space_id: int = ids[SPACE_TOKEN]

    @classmethod
    def from_file(cls, path: str | Path) -> "TextTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def _encode(self, normalized_text: str):
        return self.tokenizer.encode(normalized_text.replace(" ", SPACE_TOKEN))

    def encode(self, normalized_text: str) -> list[int]:
        """Ids of already normalised text; every space becomes one [SPACE] token."""
        return list(self._encode(normalized_text).ids)

    def _unknown(self, normalized_text: str, encoding) -> tuple[str, ...]:
        # Offsets index the [SPACE]-substituted string, so slice that one.
        spaced = normalized_text.replace(" ", SPACE_TOKEN)
        return tuple(spaced[s:e] for i, (s, e) in zip(encoding.ids, encoding.offsets) if i == self.unk_id)

    def unknown_characters(self, normalized_text: str) -> list[str]:
        """Each character occurrence that `encode` maps to [UNK], in text order."""
        return list(self._unknown(normalized_text, self._encode(normalized_text)))

    def tokenize(self, raw_text: str) -> TokenizedText:
        """punc_norm + encode + the [UNK] report, in one pass."""
        normalized = punc_norm(raw_text)
        enc = self._encode(normalized)
        return TokenizedText(normalized, tuple(enc.ids), self._unknown(normalized, enc))

    def with_start_stop(self, ids: Sequence[int]) -> list[int]:
        """[START] + ids + [STOP]: the text sequence T3 consumes."""
        return [self.start_id, *ids, self.stop_id]

    def token_strings(self, ids: Sequence[int]) -> list[str]:
        return [self.tokenizer.id_to_token(int(i)) for i in ids]

    def decode(self, ids: Sequence[int]) -> str:
        """The reference's debug round trip: [SPACE] back to spaces, [STOP]/[UNK] dropped."""
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)
        text = text.replace(" ", "").replace(SPACE_TOKEN, " ")
        return text.replace(STOP_TOKEN, "").replace(UNK_TOKEN, "")
