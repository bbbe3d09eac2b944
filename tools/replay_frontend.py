"""Parity replays of the front-end stages: (a) voice encoder, (b) text normalisation and tokens.

Every quantity is recomputed from the golden file's own inputs. Where a stage has several
steps, each step is fed the golden output of the step before it, so a mismatch points at
one step; the end-to-end embedding is then checked from the waveform on.
"""
from __future__ import annotations

import numpy as np
import torch

from models.audio import resample, trim_silence

VE_SAMPLE_RATE = 16_000  # Hz
REFERENCE_SAMPLE_RATE = 24_000  # Hz, what `librosa.load(sr=24000)` gives

# README: an independent resampler matches soxr only to ~1e-3.
RESAMPLE_ATOL = 1e-3
# README: exact to ~1e-4 (relative for large values; the mel is not log-compressed).
MEL_RTOL = 1e-4
EMBED_ATOL = 1e-4


def replay_voice_encoder(data, ctx, report) -> None:
    ve = ctx.voice_encoder
    wav_16k = data["wav_16k"]

    report.close("resample 24k->16k (soxr HQ)", resample(data["wav_24k"], REFERENCE_SAMPLE_RATE, VE_SAMPLE_RATE),
                 wav_16k, RESAMPLE_ATOL)

    start, end = trim_silence(wav_16k, top_db=ve.config.trim_top_db)
    report.equal("trim_start_end", np.array([start, end]), data["trim_start_end"])

    g_start, g_end = (int(i) for i in data["trim_start_end"])
    golden_mel = data["mel"]
    scale = float(np.max(np.abs(golden_mel))) or 1.0
    mel = ve.mel(wav_16k[g_start:g_end]).cpu().numpy()
    report.close("mel / max|golden mel|", mel / scale, golden_mel / scale, MEL_RTOL)

    report.equal("frame_step", np.array(ve.config.frame_step), data["frame_step"])
    partials = ve.partial_windows(torch.from_numpy(golden_mel))
    report.equal("n_partials", np.array(partials.shape[0]), data["n_partials"])
    report.close("partials / max|golden mel|", partials.numpy() / scale, data["partials"] / scale, MEL_RTOL)

    partial_embeds = ve.embed_partials(torch.from_numpy(data["partials"])).cpu().numpy()
    report.close("partial_embeds", partial_embeds, data["partial_embeds"], EMBED_ATOL)

    embed = ve.embed_utterance(wav_16k).cpu().numpy()
    report.close("embed (from wav_16k)", embed, data["embed"], EMBED_ATOL)
    if "embed_upstream" in data.files:
        report.close("embed_upstream", embed, data["embed_upstream"], EMBED_ATOL)
    report.close("speaker_emb", embed[None], data["speaker_emb"], EMBED_ATOL)


def replay_text(data, ctx, report) -> None:
    from models.text_tokenizer import punc_norm

    tok = ctx.text_tokenizer
    raw_text = str(data["raw_text"])
    golden_normalized = str(data["normalized_text"])
    if raw_text.split():
        report.equal("normalized_text", np.array(punc_norm(raw_text)), np.array(golden_normalized))
    else:
        report.skip("normalized_text", "blank input: we raise ValueError where the reference speaks a canned line")

    ids = tok.encode(golden_normalized)
    report.equal("token_ids", np.array(ids, dtype=np.int64), data["token_ids"])
    report.equal("token_ids_with_sot_eot", np.array(tok.with_start_stop(ids), dtype=np.int64),
                 data["token_ids_with_sot_eot"])
    golden_ids = [int(i) for i in data["token_ids"]]
    if "token_strings" in data.files:
        report.equal("token_strings", np.array(tok.token_strings(golden_ids), dtype=str), data["token_strings"])
    report.equal("decoded", np.array(tok.decode(golden_ids)), np.array(str(data["decoded"])))
    # Our [UNK] report must account for every [UNK] id the reference produced.
    n_unk = int(np.sum(data["token_ids"] == tok.unk_id))
    report.equal("[UNK] characters reported", np.array(len(tok.unknown_characters(golden_normalized))),
                 np.array(n_unk))
