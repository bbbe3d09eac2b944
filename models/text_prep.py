"""Text as typed -> what the model is asked to say: markup, tags, pauses, symbols, numbers.

`prepare_text` runs before chunking. It returns the text pieces to speak with the pauses
between them (`PreparedText.segments`) and what it changed (`notes`):
- decoration never reaches T3: a separator line (`***`, `---`, `* * *`, `<hr>`) becomes a
  pause, a markdown heading keeps its words without its `#` marks, emphasis marks, list
  bullets, quote marks (`>`) and link targets are dropped;
- tags: a tag the model knows (`known_tags`, e.g. "[laughter]"; "[laugh]" is read as it)
  stays for the tokenizer to make its token; a pause tag (`[pause:1.5s]`, `[pause]`,
  `<break time="2s"/>`) becomes silence and ends the piece; every other bracketed or
  angle-bracketed tag is removed and listed, so typing a control token ("[STOP]") can
  never inject its id;
- with `normalize` (the default), numbers, amounts, dates, units and abbreviations become
  words (`models.text_normalize`) and symbols outside the vocabulary become words or
  neighbouring characters (`€` -> "euros", `ẞ` -> "ß");
- a request with nothing the model can say raises ValueError saying why and what to do.
`plan_request` is the pipeline's single call: preparation, chunking, token ids and each
chunk's speech-token bound (from its length as spoken, `chunk_token_limit`).
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Collection

from .chunking import split_text
from .guard import MAX_NEW_TOKENS, max_tokens_for_text
from .text_languages import LanguageRules, rules_for
from .text_normalize import normalize_text
from .text_tokenizer import START_TOKEN, STOP_TOKEN, SPACE_TOKEN, UNK_TOKEN, TextTokenizer, TokenizedText

DEFAULT_PAUSE_S = 0.5    # "[pause]" without a length: a deliberate beat, longer than a sentence gap
SEPARATOR_PAUSE_S = 1.0  # a section break ("***")
MAX_PAUSE_S = 10.0       # one pause; longer ones are shortened (and noted)

# The event tags of the English tokenizer (added tokens of tokenizer.json). Its other added
# tokens are control tokens, language markers and unused placeholders, never typed tags.
ENGLISH_EVENT_TAGS = frozenset(
    "[UH] [UM] [giggle] [laughter] [guffaw] [inhale] [exhale] [sigh] [cry] [bark] [howl] [meow] [singing] "
    "[music] [whistle] [humming] [gasp] [groan] [whisper] [mumble] [sniff] [sneeze] [cough] [snore] [chew] "
    "[sip] [clear_throat] [kiss] [shhh] [gibberish]".split())
CONTROL_TOKENS = frozenset({START_TOKEN, STOP_TOKEN, UNK_TOKEN, SPACE_TOKEN})

# A typed tag -> the tag names it may stand for, most faithful first (names as `_tag_key` gives them).
_TAG_ALIASES = {
    "laugh": ("laugh", "laughter"), "laughs": ("laugh", "laughter"), "laughing": ("laugh", "laughter"),
    "laughter": ("laughter", "laugh"), "chuckle": ("chuckle", "giggle"), "chuckles": ("chuckle", "giggle"),
    "giggle": ("giggle", "chuckle"), "giggles": ("giggle", "chuckle"), "sighs": ("sigh",),
    "coughs": ("cough",), "gasps": ("gasp",), "sniffs": ("sniff",), "groans": ("groan",),
    "clears throat": ("clear throat",), "throat clear": ("clear throat",), "breath": ("inhale",),
    "breathes": ("inhale",), "whispers": ("whisper", "whispering"), "whispering": ("whispering", "whisper"),
    "whisper": ("whisper", "whispering"), "crying": ("crying", "cry"), "cry": ("cry", "crying"),
    "cries": ("cry", "crying"), "shush": ("shush", "shhh"), "shhh": ("shhh", "shush"),
}

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff\ufe0e\ufe0f"), None)
_SPACES = dict.fromkeys(map(ord, "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
                                 "\u200a\u202f\u205f\u3000\t"), " ")
_DECORATION = "-*_=~#\u2022\u00b7+.\u2026\u25c6\u25c7\u25cb\u25cf\u25a0\u25a1\u2605\u2606\u2726\u2727\u2042\u00a7"
_SEPARATOR_LINE = re.compile(rf"^(?:[{re.escape(_DECORATION)}\u2500-\u257f]\s*){{3,}}$|^#+$|^\u2042$")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)(?:\s+#+)?$")
_BULLET = re.compile(r"^(?:[-*+\u2022\u00b7\u25e6\u25aa\u25ba\u2023\u2013\u2014]|>+)\s+")
_LINK = re.compile(r"!?\[([^\[\]\n]+)\]\([^()\s]*\)")
_EMPHASIS = re.compile(r"(?<!\w)(\*{1,3}|_{1,3}|~~)(?=\S)(.+?)(?<=\S)\1(?!\w)")
_SQUARE_TAG = re.compile(r"\[([^\[\]\n]{1,80})\]")
# "<name>", "</name>", "<name attr="value" .../>"; attributes need "=", so "x<y and y>z" is no tag.
_ANGLE_TAG = re.compile(r"""<(/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+\s*=\s*(?:"[^"<>]*"|'[^'<>]*'|[^\s"'<>/]+))*)\s*/?>""")
# A special token as a GPT-2 tokenizer spells it ("<|endoftext|>"): typed, it would become its id.
_SPECIAL_TOKEN = re.compile(r"<\|[^|<>\n]{1,40}\|>")
_PAUSE_NAMES = ("pause", "break", "silence", "stille")
_DURATION = re.compile(r"(\d+(?:[.,]\d+)?)\s*(ms|s|sec|secs|seconds?|sek|sekunden?)?\b", re.IGNORECASE)
_TAG_LIKE_WORDS, _TAG_LIKE_CHARS = 3, 32  # longer bracketed text is kept as text, without brackets
# Private-use characters (plane 15) stand for pauses and known tags while the text is
# rewritten; 32768 of each is more than a request's 12,000 characters can hold. Private-use
# characters in the input are removed first (no model reads them).
_PAUSE_BASE, _TAG_BASE, _MARKER_END = 0xF0000, 0xF8000, 0xFFFFF
_PRIVATE_USE = re.compile("[\ue000-\uf8ff\U000f0000-\U0010ffff]")
# Letters with a stroke or a special form have no decomposition; their plain neighbours.
_NEIGHBOURS = {"\u0141": "L", "\u0142": "l", "\u0110": "D", "\u0111": "d", "\u0126": "H", "\u0127": "h",
               "\u0131": "i", "\u0152": "OE", "\u0153": "oe", "\u0166": "T", "\u0167": "t"}
_SCRIPT_LANGUAGES = {"CJK": "Chinese", "HIRAGANA": "Japanese", "KATAKANA": "Japanese", "HANGUL": "Korean",
                     "CYRILLIC": "Russian", "GREEK": "Greek", "ARABIC": "Arabic", "HEBREW": "Hebrew",
                     "DEVANAGARI": "Hindi"}


@dataclass(frozen=True)
class Pause:
    """Silence of `seconds` between two text pieces (or before the first, after the last)."""

    seconds: float

    def samples(self, sample_rate: int) -> int:
        return round(self.seconds * sample_rate)


Segment = str | Pause


@dataclass(frozen=True)
class PreparedText:
    """What `prepare_text` made of a request: pieces to speak and pauses, in order.

    Invariants: no text piece is empty or without a letter, digit or known tag; no two
    pauses are adjacent; at least one text piece exists. `removed_tags` and
    `replaced_characters` list each item once, in order of first appearance.
    """

    segments: tuple[Segment, ...]
    language: str
    normalized: bool                        # numbers and symbols were rewritten as words
    changed: bool                           # the spoken text differs from the input beyond whitespace
    removed_tags: tuple[str, ...] = ()
    replaced_characters: tuple[str, ...] = ()  # "€ -> euros", "ẞ -> ß"
    separators: int = 0
    shortened_pauses: int = 0

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(s for s in self.segments if isinstance(s, str))

    @property
    def normalized_text(self) -> str:
        """The text as it will be spoken, pauses written as "[pause 1.5 s]"."""
        return " ".join(s if isinstance(s, str) else f"[pause {s.seconds:g} s]" for s in self.segments)

    @property
    def notes(self) -> tuple[str, ...]:
        """Readable lines for the user about what was changed and why."""
        notes = []
        if self.changed:
            notes.append(f"Read as: {self.normalized_text}")
        if self.separators:
            notes.append(f"{self.separators} separator line(s) read as a pause")
        if self.removed_tags:
            notes.append(f"Tags this model does not know were left out: {', '.join(self.removed_tags)}")
        if self.replaced_characters:
            notes.append(f"Characters read as words: {', '.join(self.replaced_characters)}")
        if self.shortened_pauses:
            notes.append(f"{self.shortened_pauses} pause(s) shortened to {MAX_PAUSE_S:g} s")
        return tuple(notes)


def _tag_key(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().strip("[]<>").strip()).lower()


def _unique(items) -> tuple:
    return tuple(dict.fromkeys(items))


class _Rewriter:
    """One request's rewrite; collects pauses, kept tags and notes while it works."""

    def __init__(self, rules: LanguageRules, known_tags: Collection[str]):
        self.rules = rules
        bad = CONTROL_TOKENS.intersection(known_tags)
        if bad:
            raise ValueError(f"known_tags must not contain control tokens: {sorted(bad)}")
        self.known = {_tag_key(t): t for t in known_tags}
        self.pauses: list[float] = []
        self.tags: list[str] = []
        self.removed: list[str] = []
        self.separators = 0
        self.shortened = 0

    def pause(self, seconds: float) -> str:
        if seconds > MAX_PAUSE_S:
            self.shortened += 1
            seconds = MAX_PAUSE_S
        self.pauses.append(seconds)
        return f" {chr(_PAUSE_BASE + len(self.pauses) - 1)} "

    def keep_tag(self, token: str) -> str:
        self.tags.append(token)
        return f" {chr(_TAG_BASE + len(self.tags) - 1)} "

    # --- lines: separators, headings, bullets, quotes ------------------------------------

    def lines(self, text: str) -> str:
        out = []
        for line in text.split("\n"):
            stripped = line.strip()
            if _SEPARATOR_LINE.match(stripped) or re.fullmatch(r"<hr\s*/?>", stripped, re.IGNORECASE):
                self.separators += 1
                out.append(self.pause(SEPARATOR_PAUSE_S))
                continue
            heading = _HEADING.match(stripped)
            if heading:
                stripped = heading.group(1)
            while _BULLET.match(stripped):
                stripped = _BULLET.sub("", stripped, count=1)
            out.append(stripped)
        return "\n".join(out)

    # --- tags ----------------------------------------------------------------------------

    def _duration(self, text: str) -> float:
        found = _DURATION.search(text)
        if not found:
            return DEFAULT_PAUSE_S
        value = float(found.group(1).replace(",", "."))
        return value / 1000 if (found.group(2) or "").lower() == "ms" else value

    def _known(self, name: str) -> str | None:
        key = _tag_key(name)
        for candidate in _TAG_ALIASES.get(key, (key,)):
            if candidate in self.known:
                return self.known[candidate]
        return None

    def square(self, m: re.Match) -> str:
        content = m.group(1).strip()
        first = re.split(r"[\s:=]", content, maxsplit=1)[0].lower()
        if first in _PAUSE_NAMES:
            return self.pause(self._duration(content[len(first):]))
        token = self._known(content)
        if token is not None:
            return self.keep_tag(token)
        if len(content.split()) > _TAG_LIKE_WORDS or len(content) > _TAG_LIKE_CHARS:
            return f" {content} "  # bracketed prose, not a tag: read it
        self.removed.append(m.group(0))
        return " "

    def special(self, m: re.Match) -> str:
        self.removed.append(m.group(0))
        return " "

    def angle(self, m: re.Match) -> str:
        name = m.group(2).lower()
        if name in _PAUSE_NAMES and not m.group(1):
            return self.pause(self._duration(m.group(3)))
        if name == "br":
            return "\n"
        if name == "hr":
            self.separators += 1
            return self.pause(SEPARATOR_PAUSE_S)
        token = self._known(m.group(2)) if not m.group(1) and not m.group(3).strip() else None
        if token is not None:
            return self.keep_tag(token)
        self.removed.append(m.group(0))
        return " "

    def markup(self, text: str) -> str:
        text = self.lines(text)
        text = _LINK.sub(r"\1", text)
        text = _EMPHASIS.sub(r"\2", text)
        text = _SPECIAL_TOKEN.sub(self.special, text)
        text = _SQUARE_TAG.sub(self.square, text)
        text = _ANGLE_TAG.sub(self.angle, text)
        # What is left of brackets cannot be a tag any more; dropping them also means no
        # control token ("[STOP]") can be assembled from the pieces around a removed tag.
        return re.sub(r"[\[\]*`]", "", text)


def _script(ch: str) -> str:
    return unicodedata.name(ch, "UNKNOWN").split(" ")[0]


def _check_speakable(text: str, rules: LanguageRules, has_tags: bool) -> None:
    """ValueError if `text` has no letter or digit the model reads (and no known tag), or is
    mostly written in a script the model does not read."""
    readable = foreign = digits = 0
    scripts: dict[str, int] = {}
    for ch in text:
        if ch.isdigit():
            digits += 1
        elif ch.isalpha():
            script = _script(ch)
            if script in rules.scripts:
                readable += 1
            else:
                foreign += 1
                scripts[script] = scripts.get(script, 0) + 1
    if foreign > readable:
        main = max(scripts, key=scripts.get)
        language = _SCRIPT_LANGUAGES.get(main)
        name = main if main == "CJK" else main.title()
        advice = f"choose Multilingual for {language}" if language else f"no model here reads {name} script"
        raise ValueError(f"this model reads {rules.name}; the text is written in {name} script: {advice}")
    if not readable and not digits and not has_tags:
        raise ValueError("there is nothing to speak: the text has no letters or digits "
                         "(only punctuation, symbols, emoji, separators or tags)")


def _replace_characters(text: str, rules: LanguageRules, characters: Collection[str] | None,
                        replaced: list[str]) -> str:
    """Symbols to words (the language's table), then letters outside `characters` to neighbours."""
    out = []
    for ch in text:
        new = rules.characters.get(ch)
        if new is None and characters is not None and ch not in characters and ch.isalpha():
            for candidate in (ch.lower(), _NEIGHBOURS.get(ch, ""), unicodedata.normalize("NFKC", ch),
                              "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))):
                if candidate and candidate != ch and all(c in characters for c in candidate):
                    new = candidate
                    break
        if new is None:
            out.append(ch)
        else:
            out.append(new)
            replaced.append(f"{ch} -> {new.strip() or '(nothing)'}")
    return "".join(out)


def prepare_text(text: str, language: str, normalize: bool = True, known_tags: Collection[str] = frozenset(),
                 characters: Collection[str] | None = None) -> PreparedText:
    """The pieces of `text` to speak, with pauses, for a model reading `language` (ISO 639-1).

    `known_tags`: the model's tag tokens exactly as its tokenizer spells them (e.g.
    ENGLISH_EVENT_TAGS); `characters`: the single characters its vocabulary holds, for
    mapping other letters to neighbours (None: skip that). With `normalize=False` numbers,
    abbreviations and symbols stay as typed; markup, tags and pauses are always handled.
    Raises ValueError for empty text, text with nothing the model can say (the message says
    why and what to do), an unknown language, or control tokens among `known_tags`.
    """
    rules = rules_for(language)
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text is empty: type something to say")
    rewriter = _Rewriter(rules, known_tags)
    clean = text.translate(_INVISIBLE).translate(_SPACES).replace("\r\n", "\n").replace("\r", "\n")
    clean = _PRIVATE_USE.sub("", clean.replace("\u2028", "\n").replace("\u2029", "\n"))
    body = rewriter.markup(clean)
    _check_speakable(_PRIVATE_USE.sub(" ", body), rules, has_tags=bool(rewriter.tags))
    replaced: list[str] = []
    if normalize:
        body = normalize_text(body, language)
        body = _replace_characters(body, rules, characters, replaced)
    segments: list[Segment] = []
    for piece in re.split(f"([{chr(_PAUSE_BASE)}-{chr(_TAG_BASE - 1)}])", body):
        if len(piece) == 1 and _PAUSE_BASE <= ord(piece) < _TAG_BASE:
            seconds = rewriter.pauses[ord(piece) - _PAUSE_BASE]
            if segments and isinstance(segments[-1], Pause):
                seconds = min(MAX_PAUSE_S, segments[-1].seconds + seconds)
                segments.pop()
            segments.append(Pause(seconds))
            continue
        has_tag = any(_TAG_BASE <= ord(c) for c in piece)
        piece = re.sub(f"[{chr(_TAG_BASE)}-{chr(_MARKER_END)}]",
                       lambda m: rewriter.tags[ord(m.group(0)) - _TAG_BASE], piece)
        # A removed tag or a symbol read as ", " can leave a space before a mark: "The end ."
        lines = [re.sub(r" ([.,!?;:])", r"\1", " ".join(line.split())) for line in piece.split("\n")]
        piece = "\n".join(line for line in lines if line)
        if has_tag or any(c.isalnum() for c in piece):
            segments.append(piece)
    if not any(isinstance(s, str) for s in segments):
        raise ValueError("there is nothing to speak: the text has only separators, pauses or tags")
    spoken = " ".join(s if isinstance(s, str) else "" for s in segments)
    return PreparedText(
        segments=tuple(segments), language=language, normalized=normalize,
        changed=" ".join(spoken.split()) != " ".join(text.split()) or any(isinstance(s, Pause) for s in segments),
        removed_tags=_unique(rewriter.removed), replaced_characters=_unique(replaced),
        separators=rewriter.separators, shortened_pauses=rewriter.shortened)


def vocabulary_characters(tokenizer: TextTokenizer) -> frozenset[str]:
    """The single characters `tokenizer` has a token for (what `prepare_text` keeps as is)."""
    return frozenset(t for t in tokenizer.tokenizer.get_vocab(with_added_tokens=False) if len(t) == 1)


def plan_chunks(prepared: PreparedText, max_chars: int) -> list[Segment]:
    """`prepared.segments` with each text piece split into chunks (`chunking.split_text`)."""
    out: list[Segment] = []
    for segment in prepared.segments:
        out.extend([segment] if isinstance(segment, Pause) else split_text(segment, max_chars, prepared.language))
    return out


@dataclass(frozen=True)
class PlannedChunk:
    """One T3 generation of a request: its tokens, its speech-token bound, and its index
    among the request's text chunks (what `chunking.chunk_seed` takes; pauses have none)."""

    index: int
    tokens: TokenizedText
    token_limit: int


@dataclass(frozen=True)
class RequestPlan:
    """A request ready for generation: chunks and pauses in order, and what preparation noted."""

    prepared: PreparedText
    items: tuple[PlannedChunk | Pause, ...]

    @property
    def chunks(self) -> tuple[PlannedChunk, ...]:
        return tuple(i for i in self.items if isinstance(i, PlannedChunk))

    @property
    def notes(self) -> tuple[str, ...]:
        return self.prepared.notes

    @property
    def unknown_characters(self) -> tuple[str, ...]:
        return tuple(ch for c in self.chunks for ch in c.tokens.unknown_characters)

    @property
    def normalized_text(self) -> str:
        """What T3 reads (after punctuation clean-up), pauses written as "[pause 1.5 s]"."""
        return " ".join(i.tokens.normalized_text if isinstance(i, PlannedChunk) else f"[pause {i.seconds:g} s]"
                        for i in self.items)


def plan_request(text: str, language: str, tokenizer, max_chars: int,
                 max_new_tokens: int = MAX_NEW_TOKENS, normalize: bool = True,
                 known_tags: Collection[str] = frozenset()) -> RequestPlan:
    """`prepare_text`, chunking, tokenising and token bounds of a request, in one call.

    `tokenizer`: the model's text front-end (`TextTokenizer`, or Turbo's `TurboTextTokenizer`);
    its `tokenize(piece)` gives the ids. Each chunk's bound is `chunk_token_limit` capped at
    `max_new_tokens`. Raises what `prepare_text` raises.
    """
    # A byte-level BPE (Turbo's GPT-2) spells every character: no letter needs a neighbour.
    characters = vocabulary_characters(tokenizer) if isinstance(tokenizer, TextTokenizer) else None
    prepared = prepare_text(text, language, normalize, known_tags, characters)
    items: list[PlannedChunk | Pause] = []
    for item in plan_chunks(prepared, max_chars):
        if isinstance(item, Pause):
            items.append(item)
        else:
            tokens = tokenizer.tokenize(item)
            limit = chunk_token_limit(tokens.normalized_text, language, max_new_tokens)
            items.append(PlannedChunk(sum(isinstance(i, PlannedChunk) for i in items), tokens, limit))
    return RequestPlan(prepared, tuple(items))


_PAUSE_MARKS = re.compile(r"[.,;:!?\u2026]+|\[[^\[\]]+\]")


def chunk_token_limit(chunk: str, language: str, cap: int = MAX_NEW_TOKENS) -> int:
    """Speech-token bound of one chunk, from its length as spoken (see guard.max_tokens_for_text).

    The chunk is measured after number normalisation even when that is off, since T3 then
    reads the digits out at about their spoken length; each clause or sentence mark and
    each tag adds room for a pause.
    """
    try:
        spoken = normalize_text(chunk, language)
    except ValueError:
        spoken = chunk
    return max_tokens_for_text(len(spoken), cap, n_pauses=len(_PAUSE_MARKS.findall(spoken)))
