"""The voice tabs headless: built in a small gr.Blocks, driven through Gradio's client API
(convert streams, save/rename/delete voices, voice lab plot, watermark check)."""
from __future__ import annotations

from contextlib import nullcontext

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import PARITY, REAL_VOICES
from test_vc import real_voice, tiny_s3gen
from test_voice_library import make_conds

pytestmark = pytest.mark.slow  # starts a Gradio server (~20 s)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import gradio as gr
    from gradio_client import Client

    from models.similarity import SpeakerSimilarity
    from models.voice_library import ReadOnlyVoice, VoiceLibrary
    from models.watermark import Watermarker
    from voice_tabs import VoiceTools, build_voice_tabs

    tmp = tmp_path_factory.mktemp("ui")
    s3gen = tiny_s3gen()
    library = VoiceLibrary(tmp / "voices", read_only={
        "Example A": ReadOnlyVoice("example", clip=REAL_VOICES / "aishell_s0764_a.wav")})
    # The TTS conditionals need T3's voice encoder; the tabs only pass them through to the library.
    prepared = []

    def prepare(clip, exaggeration):
        prepared.append((clip.seconds_used, exaggeration))
        return make_conds(len(prepared))

    tools = VoiceTools(use_s3gen=lambda: nullcontext(s3gen), watermarker=Watermarker(), library=library,
                       similarity=SpeakerSimilarity(), prepare_voice=prepare, can_stream=False)
    with gr.Blocks() as demo:
        build_voice_tabs(tools, demo)
    demo.queue().launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        yield Client(demo.local_url, verbose=False), tmp, prepared, library, tools
    finally:
        demo.close()


def test_convert_streams_watermarked_audio_of_the_right_length(served):
    from gradio_client import handle_file

    client, tmp = served[:2]
    sf.write(tmp / "source.wav", real_voice(2.0), 16_000)
    _, full, notes = client.predict(handle_file(str(tmp / "source.wav")), None, "Example A", 3,
                                    api_name="/convert")
    wav, rate = sf.read(full, dtype="float32")
    assert rate == 24_000 and len(wav) % 480 == 0 and len(wav) > 1.5 * 24_000
    assert "watermarked (Perth)" in notes and "Example A" in notes
    with pytest.raises(Exception, match="give a target voice"):
        client.predict(handle_file(str(tmp / "source.wav")), None, "(use the uploaded clip)", 0, api_name="/convert")


def test_save_rename_delete_and_refuse_built_ins(served):
    from gradio_client import handle_file

    client, _, prepared, library = served[:4]
    clip = handle_file(str(REAL_VOICES / "aishell_s0764_b.wav"))
    table, _, message = client.predict("Anna", clip, 0.7, api_name="/save_voice")
    assert "Saved **Anna**" in message and prepared[-1][1] == 0.7
    assert ["Anna", "saved", "english", "exaggeration 0.7"] in table["data"]
    table, _, _ = client.predict("Anna", "Berta", api_name="/rename_voice")
    assert "Berta" in [row[0] for row in table["data"]] and "Anna" not in library.names()
    with pytest.raises(Exception, match="cannot be deleted"):
        client.predict("Example A", api_name="/delete_voice")
    with pytest.raises(Exception, match="exists already"):
        client.predict("berta", clip, 0.5, api_name="/save_voice")
    tools = served[4]
    assert tools.conditionals_for("berta", 0.9).t3.emotion_adv == 0.9  # the TTS tab picks it by name
    assert tools.conditionals_for("Example A") is not None and prepared[-1][1] == 0.5  # a clip: prepared now
    client.predict("Berta", api_name="/delete_voice")
    assert library.names() == ["Example A"]


def test_voice_lab_returns_matrix_and_plot(served):
    from gradio_client import handle_file

    client = served[0]
    files = [handle_file(str(REAL_VOICES / "aishell_s0764_b.wav")), handle_file(str(PARITY / "ref_a.wav"))]
    matrix, plot = client.predict(files, ["Example A"], handle_file(str(PARITY / "ref_b.wav")), "ref_a",
                                  api_name="/voice_lab")
    labels = [row[0] for row in matrix["data"]]
    assert labels == ["aishell_s0764_b", "ref_a", "Example A", "generated"]
    assert matrix["headers"] == ["clip"] + labels
    sims = np.array([row[1:] for row in matrix["data"]], dtype=float)
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-3)
    assert sims[0, 2] > sims[0, 1]  # the two AISHELL clips are one speaker
    assert plot is not None


def test_watermark_check_through_the_api(served):
    from gradio_client import handle_file

    client, tmp = served[:2]
    verdict, label = client.predict(handle_file(str(REAL_VOICES / "aishell_s0764_a.wav")), api_name="/watermark_check")
    assert verdict.startswith("no Perth watermark") and label["label"] == "not watermarked"
