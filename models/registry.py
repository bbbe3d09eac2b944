"""The models the Space serves: one frozen `ModelEntry` per model variant.

An entry says where each component's weights live on the Hub (with alternative file
names), what the component is (T3 architecture and config, text front-end, S3Gen
variant), how long the voice prompts are, which generation controls the model honours
and its recommended settings. Components with equal specs (same files, same settings)
are loaded once and shared by every resident model that names them (models/residency.py):
the voice encoder, S3Gen and built-in voice of `ResembleAI/chatterbox` serve English,
German and Multilingual alike (the English tokenizer: English and German). Adding a
model = one entry here + the builders of any new component kind (models/loading.py
`build_component`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from .fast_modes import T3_OPTIONS, LoadOptions
from .multilingual.languages import LANGUAGE_IDS, language_id
from .params import CONTROLS, GenerationParams
from .t3 import T3Config

BASE_REPO_ID = "ResembleAI/chatterbox"
KARTOFFELBOX_REPO_ID = "SebastianBodza/Kartoffelbox-v0.1"
TURBO_REPO_ID = "ResembleAI/chatterbox-turbo"
VE_FILE = "ve.safetensors"
T3_FILE = "t3_cfg.safetensors"
S3GEN_FILE = "s3gen.safetensors"
TOKENIZER_FILE = "tokenizer.json"
CONDS_FILE = "conds.pt"
# The same voice encoder and S3Gen as pickles (read with torch.load(weights_only=True)): the
# multilingual release names these; a folder holding only them serves every model sharing them.
VE_PICKLE = "ve.pt"
S3GEN_PICKLE = "s3gen.pt"
MULTILINGUAL_T3_FILE = "t3_mtl23ls_v2.safetensors"
MULTILINGUAL_TOKENIZER_FILE = "grapheme_mtl_merged_expanded_v1.json"
CANGJIE_FILE = "Cangjie5_TC.json"


@dataclass(frozen=True)
class HubFiles:
    """One component's file on the Hub: `names` are alternatives, tried in order."""

    repo_id: str
    names: tuple[str, ...]
    gated: bool = False
    companions: tuple[str, ...] = ()  # files read beside the named one (a tokenizer's other files)

    def __post_init__(self):
        if not self.names:
            raise ValueError(f"{self.repo_id}: a component needs at least one file name")


@dataclass(frozen=True)
class T3Spec:
    """T3: backbone architecture and config. `config.text_tokens_dict_size` is read from the file."""

    files: HubFiles
    architecture: str = "llama"   # "llama": Llama_520M (models/t3.py); "gpt2": T3-Turbo (models/t3_turbo.py)
    config: T3Config | None = field(default_factory=T3Config)  # None: the architecture's own (gpt2)
    # The 0.1.7 multilingual decoding: an alignment analyzer reads attention each step and may
    # suppress or force the stop token (models/multilingual/decoding.py); such a T3 decodes
    # each request alone, never in a shared batch.
    alignment_analyzer: bool = False

    def speed_options(self, options: LoadOptions) -> tuple[LoadOptions, dict[str, str]]:
        """The options this T3 is built with, and why each T3 option it leaves out is left out.

        Turbo's GPT-2 T3 has int8 among the T3 speed modes (models/loading_turbo.py); a T3
        read by the alignment analyzer keeps its layers as module calls, which int8, CUDA
        graphs and compile replace. Options left out take their defaults."""
        if self.architecture == "gpt2":
            takes, why = {"quantize"}, "Turbo's T3 has int8 only among the T3 speed modes"
        elif self.alignment_analyzer:
            takes, why = {"t3_dtype"}, "its alignment analyzer reads attention inside the layers"
        else:
            return options, {}
        default = LoadOptions()
        left = {name: why for name in T3_OPTIONS
                if name not in takes and getattr(options, name) != getattr(default, name)}
        return replace(options, **{name: getattr(default, name) for name in left}), left


@dataclass(frozen=True)
class S3GenSpec:
    """S3Gen: flow-matching steps of its decoder and whether it is the meanflow variant."""

    files: HubFiles
    flow_steps: int = 10          # Euler steps of the flow (cosine schedule)
    meanflow: bool = False

    def speed_options(self, options: LoadOptions) -> tuple[LoadOptions, dict[str, str]]:
        """As `T3Spec.speed_options`, for the flow's steps: a speed option never adds steps, so
        `flow_steps` above this decoder's own (Turbo's 2) is left out."""
        if options.flow_steps is None or options.flow_steps <= self.flow_steps:
            return options, {}
        return (replace(options, flow_steps=None),
                {"flow_steps": f"its decoder already takes {self.flow_steps} steps"})


@dataclass(frozen=True)
class VoiceEncoderSpec:
    files: HubFiles


@dataclass(frozen=True)
class TextSpec:
    """The text front-end: "english" is punctuation normalisation + tokenizer.json's BPE;
    "turbo" is Turbo's punctuation normalisation + the GPT-2 tokenizer with its tags;
    "multilingual" is the 23-language front-end (models/multilingual/text.py: language tag,
    lower case, NFKD, per-language steps) with per-script sentence chunking."""

    files: HubFiles
    frontend: str = "english"


@dataclass(frozen=True)
class BuiltinVoiceSpec:
    """The voice used when a request brings none (`conds.pt`); optional: may be absent."""

    files: HubFiles


@dataclass(frozen=True)
class PromptSpec:
    """How much of a reference clip each stage conditions on."""

    t3_seconds: float = 6.0       # the reference's ENC_COND_LEN
    t3_tokens: int = 150          # 6 s of 25 Hz S3 tokens
    s3gen_seconds: float = 10.0   # the reference's DEC_COND_LEN
    min_reference_seconds: float = 0.0  # a clip must be longer than this (Turbo's reference asserts 5 s)


# What the Llama T3 models read; top_k is Turbo's alone.
LLAMA_CONTROLS = ("exaggeration", "cfg_weight", "temperature", "min_p", "top_p", "repetition_penalty")
TURBO_CONTROLS = ("temperature", "top_k", "top_p", "repetition_penalty")
# The expression tags of Turbo's tokenizer (added_tokens.json, non-special), in id order 50257..50275.
TURBO_TAGS = ("[angry]", "[fear]", "[surprised]", "[whispering]", "[advertisement]", "[dramatic]", "[narration]",
              "[crying]", "[happy]", "[sarcastic]", "[clear throat]", "[sigh]", "[shush]", "[cough]", "[groan]",
              "[sniff]", "[gasp]", "[chuckle]", "[laugh]")


@dataclass(frozen=True)
class ModelEntry:
    """One model variant, as the app lists it and the pipeline loads it."""

    id: str
    label: str
    languages: tuple[str, ...]    # ISO 639-1 codes its text front-end and chunking speak
    t3: T3Spec
    s3gen: S3GenSpec
    voice_encoder: VoiceEncoderSpec
    text: TextSpec
    builtin_voice: BuiltinVoiceSpec | None
    licence: str
    prompt: PromptSpec = field(default_factory=PromptSpec)
    controls: tuple[str, ...] = LLAMA_CONTROLS    # the generation controls it honours
    recommended: GenerationParams = field(default_factory=GenerationParams)
    about: str = ""
    tags: tuple[str, ...] = ()    # expression tags offered as buttons (tokens of its text front-end)
    loudness_toggle: bool = False  # offers normalising the reference's loudness (on by default)

    def __post_init__(self):
        unknown = [c for c in self.controls if c not in CONTROLS]
        if unknown:
            raise ValueError(f"{self.id}: unknown generation controls {unknown}; known: {', '.join(CONTROLS)}")

    @property
    def components(self) -> dict[str, object]:
        """Role -> spec of every component, in loading order (the built-in voice last)."""
        parts = {"t3": self.t3, "s3gen": self.s3gen, "voice_encoder": self.voice_encoder, "text": self.text}
        if self.builtin_voice is not None:
            parts["builtin_voice"] = self.builtin_voice
        return parts

    @property
    def gated(self) -> bool:
        return any(spec.files.gated for spec in self.components.values())

    @property
    def language(self) -> str:
        """The language of the text front-end's sentence rules (the first listed)."""
        return self.languages[0]

    @property
    def takes_language(self) -> bool:
        """Whether a request chooses among several languages (Multilingual) or the model has one."""
        return len(self.languages) > 1

    def resolve_language(self, language: str | None) -> str:
        """The language a request on this model speaks: `language` (an id or a name, any case,
        e.g. "ja" or "Japanese") if the model speaks it; None or "" means the model's only
        language (a model taking a language needs one). ValueError otherwise."""
        if language is None or language == "":
            if self.takes_language:
                raise ValueError(f"{self.label} needs a language: one of {', '.join(self.languages)}")
            return self.language
        lang = language_id(language)
        if lang not in self.languages:
            others = [e.label for e in MODELS.values() if lang in e.languages and e.id != self.id]
            hint = f"; {' or '.join(others)} speaks it" if others else ""
            raise ValueError(f"{self.label} speaks {', '.join(self.languages)}, not {language!r}{hint}")
        return lang


_SHARED = dict(  # one voice encoder, S3Gen and built-in voice for English, German and Multilingual
    s3gen=S3GenSpec(HubFiles(BASE_REPO_ID, (S3GEN_FILE, S3GEN_PICKLE))),
    voice_encoder=VoiceEncoderSpec(HubFiles(BASE_REPO_ID, (VE_FILE, VE_PICKLE))),
    builtin_voice=BuiltinVoiceSpec(HubFiles(BASE_REPO_ID, (CONDS_FILE,))),
)
_BASE = dict(_SHARED, text=TextSpec(HubFiles(BASE_REPO_ID, (TOKENIZER_FILE,))))

MODELS: dict[str, ModelEntry] = {entry.id: entry for entry in (
    ModelEntry(
        id="english", label="English (Chatterbox)", languages=("en",),
        t3=T3Spec(HubFiles(BASE_REPO_ID, (T3_FILE,))), **_BASE,
        licence="MIT (ResembleAI/chatterbox)",
        about="Resemble AI's English Chatterbox; the reference `generate` defaults.",
    ),
    ModelEntry(
        # Only T3 was fine-tuned; the repository renamed its file once, so both names are tried.
        id="german", label="German (Kartoffelbox)", languages=("de",),
        t3=T3Spec(HubFiles(KARTOFFELBOX_REPO_ID, (T3_FILE, "t3_kartoffelbox.safetensors"), gated=True)),
        **_BASE,
        licence="reported CC-BY-NC-ND (check the model card before reuse); gated: set HF_TOKEN",
        # The model card's recommended settings (trained without emotion labels).
        recommended=GenerationParams(temperature=0.6, cfg_weight=0.3),
        about="Kartoffelbox v0.1: a German fine-tune of Chatterbox's T3; use a German reference voice. "
              "Multilingual (language German) is the other German option (MIT, not gated).",
    ),
    ModelEntry(
        # Every file from the Turbo repository: its voice encoder has its own weights.
        # (Kartoffelbox Turbo, a gated German T3-Turbo fine-tune, has no entry: its file layout is unverified.)
        id="turbo", label="Turbo (Chatterbox-Turbo)", languages=("en",),
        t3=T3Spec(HubFiles(TURBO_REPO_ID, ("t3_turbo_v1.safetensors",)), architecture="gpt2", config=None),
        s3gen=S3GenSpec(HubFiles(TURBO_REPO_ID, ("s3gen_meanflow.safetensors",)), flow_steps=2, meanflow=True),
        voice_encoder=VoiceEncoderSpec(HubFiles(TURBO_REPO_ID, (VE_FILE,))),
        text=TextSpec(HubFiles(TURBO_REPO_ID, ("vocab.json",), companions=(
            "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")), frontend="turbo"),
        builtin_voice=BuiltinVoiceSpec(HubFiles(TURBO_REPO_ID, (CONDS_FILE,))),
        licence="MIT (ResembleAI/chatterbox-turbo)",
        prompt=PromptSpec(t3_seconds=15.0, t3_tokens=375, s3gen_seconds=10.0, min_reference_seconds=5.0),
        controls=TURBO_CONTROLS,
        recommended=GenerationParams(temperature=0.8, top_k=1000, top_p=0.95, repetition_penalty=1.2),
        tags=TURBO_TAGS, loudness_toggle=True,
        about="Chatterbox-Turbo: GPT-2 T3 and a 2-step decoder, the fast English model; reads expression "
              "tags such as [laugh]; the reference voice must be longer than 5 s.",
    ),
    ModelEntry(
        # The multilingual release of ResembleAI/chatterbox: its own T3 (text vocabulary 2454) and
        # front-end; the voice encoder, S3Gen and built-in voice are the English ones (the release's
        # ve.pt / s3gen.pt hold them as pickles: the second name of each shared spec).
        id="multilingual", label="Multilingual (Chatterbox, 23 languages)", languages=LANGUAGE_IDS,
        t3=T3Spec(HubFiles(BASE_REPO_ID, (MULTILINGUAL_T3_FILE,)), alignment_analyzer=True),
        text=TextSpec(HubFiles(BASE_REPO_ID, (MULTILINGUAL_TOKENIZER_FILE,), companions=(CANGJIE_FILE,)),
                      frontend="multilingual"),
        **_SHARED,
        licence="MIT (ResembleAI/chatterbox)",
        # chatterbox-tts 0.1.7's multilingual generate() defaults: as English but repetition penalty 2.0.
        recommended=GenerationParams(repetition_penalty=2.0),
        about="Chatterbox Multilingual: 23 languages (choose one below); a reference voice in another language "
              "carries its accent, CFG 0 reduces it.",
    ),
)}

DEFAULT_MODEL = "english"


def model_entry(model_id: str) -> ModelEntry:
    """The entry of `model_id`; ValueError naming the known ids otherwise."""
    try:
        return MODELS[model_id]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {model_id!r}; known: {', '.join(MODELS)}") from None


def entry_by_label(label: str) -> ModelEntry:
    """The entry the app lists as `label`; ValueError otherwise."""
    for entry in MODELS.values():
        if entry.label == label:
            return entry
    raise ValueError(f"unknown model {label!r}; choose one of: {', '.join(e.label for e in MODELS.values())}")
