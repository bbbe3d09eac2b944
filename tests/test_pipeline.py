"""The pipeline end to end on the fake checkpoint: conditionals, generation, seeds,
concurrency, bad input, watermark and speaker similarity."""
import threading

import numpy as np
import pytest
import soundfile as sf

from conftest import PARITY, REAL_VOICES
from models.params import GenerationParams
from models.tts import MAX_TEXT_CHARS, SAMPLE_RATE, Conditionals, LivePlayback

SHORT = 12  # speech tokens per test generation: ~0.5 s of audio keeps CPU time low


@pytest.fixture(scope="module")
def voices(pipeline):
    a = pipeline.prepare_conditionals(str(REAL_VOICES / "aishell_s0764_a.wav"))
    b = pipeline.prepare_conditionals(str(PARITY / "ref_b.wav"), exaggeration=0.7)
    return a, b


def test_conditionals_are_immutable_and_complete(pipeline, voices):
    a, b = voices
    assert a.t3.speaker_emb.shape == (1, 256)
    assert a.t3.cond_prompt_speech_tokens.shape[1] <= 150
    assert a.gen.prompt_feat.shape[0] == 2 * a.gen.prompt_token.shape[0]
    assert b.t3.emotion_adv == 0.7
    c = a.with_exaggeration(1.5)
    assert c.t3.emotion_adv == 1.5 and a.t3.emotion_adv == 0.5  # original untouched
    with pytest.raises(Exception):
        a.t3 = None


def test_builtin_voice_loads(pipeline):
    builtin = pipeline.model().builtin_voice
    assert isinstance(builtin, Conditionals)
    assert builtin.gen.prompt_token.shape == (194,)


@pytest.mark.slow
def test_generate_lengths_and_seed(pipeline, voices):
    a, _ = voices
    r1 = pipeline.synthesize("Hello there.", a, GenerationParams(seed=7), max_new_tokens=SHORT, watermark=False)
    assert r1.wav.dtype == np.float32 and r1.sample_rate == SAMPLE_RATE
    assert len(r1.wav) == 960 * r1.n_speech_tokens
    assert r1.seed == 7 and not r1.watermarked
    assert np.all(np.isfinite(r1.wav)) and np.max(np.abs(r1.wav)) <= 0.99
    r2 = pipeline.synthesize("Hello there.", a, GenerationParams(seed=7), max_new_tokens=SHORT, watermark=False)
    np.testing.assert_array_equal(r1.wav, r2.wav)
    r3 = pipeline.synthesize("Hello there.", a, GenerationParams(seed=8), max_new_tokens=SHORT, watermark=False)
    assert not np.array_equal(r1.wav[: len(r3.wav)], r3.wav[: len(r1.wav)])


@pytest.mark.slow
def test_concurrent_requests_equal_serial_runs(pipeline, voices):
    a, b = voices
    jobs = [("The first voice speaks.", a, 11), ("Die zweite Stimme spricht.", b, 22)]

    def run(text, conds, seed):
        return pipeline.synthesize(text, conds, GenerationParams(seed=seed), max_new_tokens=SHORT,
                                   watermark=False).wav

    serial = [run(*job) for job in jobs]
    results: list = [None, None]

    def worker(i):
        results[i] = run(*jobs[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("kwargs,message", [
    (dict(text=""), "empty"),
    (dict(text="   \n\t "), "empty"),
    (dict(text="x" * (MAX_TEXT_CHARS + 1)), "at most"),
    (dict(model="klingon"), "unknown model"),
    (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_bad_arguments_raise_clear_errors(pipeline, kwargs, message):
    args = dict(text="Hello.", max_new_tokens=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        pipeline.synthesize(**args)


@pytest.mark.parametrize("kwargs,message", [
    (dict(exaggeration=3.0), "exaggeration"),
    (dict(exaggeration=float("nan")), "exaggeration"),
    (dict(cfg_weight=-0.1), "cfg_weight"),
    (dict(temperature=0.0), "temperature"),
    (dict(min_p=1.5), "min_p"),
    (dict(top_p=0.0), "top_p"),
    (dict(repetition_penalty=0.5), "repetition_penalty"),
    (dict(seed=-1), "seed"),
    (dict(seed=1.5), "seed"),
])
def test_bad_generation_params_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        GenerationParams(**kwargs)


def test_bad_exaggeration_for_conditionals(pipeline):
    with pytest.raises(ValueError, match="exaggeration"):
        pipeline.prepare_conditionals(str(REAL_VOICES / "aishell_s0764_a.wav"), exaggeration=-1)


def test_watermark_detected_only_after_watermarking(pipeline):
    wm = pipeline.watermarker
    assert wm.available, wm.reason
    import soxr

    wav, sr = sf.read(REAL_VOICES / "aishell_s0764_a.wav", dtype="float32")
    wav = soxr.resample(wav, sr, SAMPLE_RATE).astype(np.float32)
    assert wm.detect(wav, SAMPLE_RATE) < 0.5
    marked = wm.apply(wav, SAMPLE_RATE)
    assert wm.detect(marked, SAMPLE_RATE) > 0.5
    assert len(marked) == len(wav)  # lengths stay 960 samples per token
    # A small change: the watermark sits about 18 dB below this clip (measured); require 15 dB.
    snr_db = 10 * np.log10(np.mean(wav ** 2) / np.mean((marked - wav) ** 2))
    assert snr_db > 15, snr_db


def test_similarity_prefers_the_same_speaker():
    from models.similarity import SpeakerSimilarity

    sim = SpeakerSimilarity()
    a, sra = sf.read(REAL_VOICES / "aishell_s0764_a.wav", dtype="float32")
    b, srb = sf.read(REAL_VOICES / "aishell_s0764_b.wav", dtype="float32")
    other, sro = sf.read(PARITY / "ref_a.wav", dtype="float32")  # a synthetic espeak voice
    same = sim.score(a, sra, b, srb)
    assert same > sim.score(a, sra, other, sro) + 0.1
    assert same > sim.score(b, srb, other, sro) + 0.1


@pytest.mark.slow
def test_long_text_is_chunked_and_streamed_in_order(pipeline, voices):
    from models.tts import CHUNK_CHARS, CHUNK_PAUSE_S

    a, _ = voices
    text = ("This sentence is one of many. " * 12).strip() + " The last one closes the text."
    assert len(text) > CHUNK_CHARS
    events = list(pipeline.stream(text, a, GenerationParams(seed=5), max_new_tokens=3, watermark=False))
    result = events[-1].result
    assert result is not None and result.n_chunks == 2
    audio = [e.audio for e in events[:-1]]
    assert [e.chunk for e in events[:-1]] == sorted(e.chunk for e in events[:-1])
    np.testing.assert_array_equal(np.concatenate(audio), result.wav)
    pause = int(CHUNK_PAUSE_S * SAMPLE_RATE)
    speech = [x for x in audio if np.any(x)]
    assert len(result.wav) == sum(len(x) for x in speech) + pause * (len(speech) - 1)
    assert result.hit_token_limit  # 3 tokens cannot say a sentence: reported, not hidden


@pytest.mark.slow
def test_cancel_stops_between_steps_and_keeps_partial_audio(pipeline, voices):
    import threading as th

    a, _ = voices
    cancel = th.Event()
    text = ("A sentence to speak. " * 14).strip() + " Another sentence follows here."
    events = []
    for event in pipeline.stream(text, a, GenerationParams(seed=9), max_new_tokens=3, watermark=False, cancel=cancel):
        events.append(event)
        cancel.set()  # stop as soon as the first audio exists
    result = events[-1].result
    from models.tts import CHUNK_PAUSE_S

    assert result.stopped and result.n_chunks == 2
    # the first chunk (<= 3 tokens) and the pause that was already streamed after it
    assert 0 < len(result.wav) <= 3 * 960 + int(CHUNK_PAUSE_S * SAMPLE_RATE)
    np.testing.assert_array_equal(np.concatenate([e.audio for e in events[:-1]]), result.wav)
    # the pipeline is usable again right away
    again = pipeline.synthesize("Short.", a, GenerationParams(seed=9), max_new_tokens=3, watermark=False)
    assert len(again.wav) > 0 and not again.stopped


@pytest.mark.slow
def test_two_clients_alternating_models_share_resident_models(pipeline, voices):
    # English and German (same T3 weights in the fake checkpoint, each its own copy): after
    # the first request of each, both stay resident and nothing is loaded again, and two
    # clients alternating between them get exactly the audio of serial runs.
    a, b = voices
    jobs = [("english", "The first client speaks.", a, 11), ("german", "Der zweite Kunde spricht.", b, 22),
            ("english", "Then the first again.", b, 33), ("german", "Und wieder der zweite.", a, 44)]

    def run(model, text, conds, seed):
        return pipeline.synthesize(text, conds, GenerationParams(seed=seed), model=model, max_new_tokens=6,
                                   watermark=False).wav

    serial = [run(*job) for job in jobs]
    base, german = "ResembleAI/chatterbox", "SebastianBodza/Kartoffelbox-v0.1"
    once = {f"t3 {base}": 1, f"t3 {german}": 1, f"s3gen {base}": 1, f"voice_encoder {base}": 1,
            f"text {base}": 1, f"builtin_voice {base}": 1}
    assert dict(pipeline.pool.loads) == once  # shared components loaded once, for both models
    assert set(pipeline.pool.resident) == {"english", "german"}
    assert pipeline.model("german").s3gen is pipeline.model("english").s3gen
    assert pipeline.model("german").t3 is not pipeline.model("english").t3

    results: list = [None] * len(jobs)

    def client(order):
        for i in order:
            results[i] = run(*jobs[i])

    threads = [threading.Thread(target=client, args=(order,)) for order in ([0, 1], [3, 2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert dict(pipeline.pool.loads) == once  # no reload
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)
    # Each model speaks with its own recommended settings unless told otherwise.
    assert pipeline.entry("german").recommended == GenerationParams(temperature=0.6, cfg_weight=0.3)


@pytest.mark.slow
def test_token_blocks_stream_the_same_tokens_in_seamless_pieces(pipeline, voices):
    from models.s3gen.streaming import StreamConfig

    a, _ = voices
    text = "Streaming says this sentence in pieces."
    seed = GenerationParams(seed=4)
    whole = pipeline.synthesize(text, a, seed, max_new_tokens=40)
    blocks = LivePlayback(blocks=StreamConfig(first_block=16, block=8))
    events = list(pipeline.stream(text, a, seed, max_new_tokens=40, live=blocks))
    result = events[-1].result
    pieces = [e for e in events[:-1] if e.audio.size]
    assert len(pieces) >= 3, [len(e.audio) for e in pieces]
    assert [e.chunk_done for e in pieces] == [False] * (len(pieces) - 1) + [True]
    joined = np.concatenate([e.audio for e in pieces])
    np.testing.assert_array_equal(joined, result.wav)
    # T3 samples exactly as without blocks (S3Gen's noise has its own generator) ...
    assert result.n_speech_tokens == whole.n_speech_tokens > 20  # (ids >= 6561 sampled by the fake model are dropped)
    # ... and S3Gen gives 960 samples per token either way (the fake model's audio has no silence to trim).
    assert len(result.wav) == len(whole.wav) == result.n_speech_tokens * 960
    # Seamless: no sample-to-sample step at a join is larger than the largest inside the pieces.
    steps = np.abs(np.diff(joined))
    joins = np.cumsum([len(e.audio) for e in pieces])[:-1]
    inside = steps.copy()
    inside[joins - 1] = 0
    assert steps[joins - 1].max() <= inside.max()
    assert result.watermarked and pipeline.watermarker.detect(result.wav, SAMPLE_RATE) > 0.5

    # Stopped after the first piece: what was streamed is kept, and counted with its tokens.
    import threading

    cancel = threading.Event()
    events = []
    for event in pipeline.stream(text, a, seed, max_new_tokens=40, live=blocks, cancel=cancel):
        events.append(event)
        if event.audio.size:
            cancel.set()
    stopped = events[-1].result
    first = events[0].audio
    assert stopped.stopped and first.size and np.array_equal(stopped.wav, first)
    assert 0 < len(stopped.wav) <= stopped.n_speech_tokens * 960 < result.n_speech_tokens * 960
