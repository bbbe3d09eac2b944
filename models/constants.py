"""Facts of the Chatterbox model family, defined once (rates, vocabularies, token ids, caps).

Every module that needs one of these imports it from here. Sources: the reference package
chatterbox-tts 0.1.7 and its checkpoints (see /shared/docs/chatterbox-spec.md).
"""
from __future__ import annotations

# --- audio ---------------------------------------------------------------------------------
S3_SR = 16_000               # Hz: S3 speech tokenizer, voice encoder and CAMPPlus input
S3GEN_SR = 24_000            # Hz: S3Gen's output and the rate of its prompt mel
S3_TOKEN_RATE = 25           # S3 speech tokens per second of audio (40 ms each)
SAMPLES_PER_TOKEN = S3GEN_SR // S3_TOKEN_RATE      # 960 output samples per speech token
S3GEN_MEL_FRAMES_PER_TOKEN = 2                     # S3Gen's 50 Hz mel: 2 frames per token
TOKENIZER_MEL_FRAMES_PER_TOKEN = 4                 # the S3 tokenizer's 100 Hz mel: 4 frames per token

# --- speech tokens ---------------------------------------------------------------------------
SPEECH_CODEBOOK_SIZE = 3**8  # 6561 FSQ codes (8 ternary digits): every id S3Gen can decode
START_SPEECH_TOKEN = 6561    # T3's speech start id (first id above the codebook)
STOP_SPEECH_TOKEN = 6562     # T3's speech stop id

# --- text tokens of the English tokenizer (tokenizer.json) -----------------------------------
START_TEXT_TOKEN = 255       # [START], prepended by T3
STOP_TEXT_TOKEN = 0          # [STOP], appended by T3
UNK_TEXT_TOKEN = 1           # [UNK], any character outside the vocabulary
SPACE_TEXT_TOKEN = 2         # [SPACE], stands for every literal space

# --- generation caps -------------------------------------------------------------------------
MAX_NEW_TOKENS = 1000        # the reference's per-generation limit: 40 s of speech
CHUNK_CHARS = 300            # read text one generation reliably speaks within MAX_NEW_TOKENS
MAX_TEXT_CHARS = 12_000      # one request: about 13 minutes of read speech

# --- seeds -----------------------------------------------------------------------------------
MAX_SEED = 2**53 - 1             # a request's seed: travels through JSON and JavaScript numbers exactly
MAX_GENERATOR_SEED = 2**63 - 1   # the largest seed torch.Generator.manual_seed accepts (derived seeds)
