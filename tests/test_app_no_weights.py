"""Without any weights (offline, nothing cached) the Space still starts, says why and how
to provide weights, and refuses to generate instead of serving random output; the tools that
need no model (the watermark check, the saved-voice list) still work."""
import os
import subprocess
import sys
import time

import pytest

from app_server import REPO, VOICES, free_port, http_status

pytestmark = pytest.mark.slow


def test_app_starts_without_weights_and_says_why(tmp_path):
    from gradio_client import Client, handle_file

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"),
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    env.pop("CHATTERBOX_CHECKPOINT", None)
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while http_status(f"http://127.0.0.1:{port}/") != 200:
            assert proc.poll() is None, (tmp_path / "app.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "app did not start"
            time.sleep(1)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception, match="No model weights could be loaded") as err:
            client.predict("Hello.", None, 0.5, 0.5, 0.8, 0.05, 1.0, 1.2, 1000, 0, True, "English (Chatterbox)",
                           api_name="/generate")
        assert "--checkpoint" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)
        verdict, _ = client.predict(handle_file(str(VOICES / "aishell_s0764_a.wav")), api_name="/watermark_check")
        assert verdict.startswith("no Perth watermark detected"), verdict
        with pytest.raises(Exception, match="saving voices needs the model weights"):
            client.predict("Mine", handle_file(str(VOICES / "aishell_s0764_a.wav")), 0.5, api_name="/save_voice")
        table, _, _ = client.predict(api_name="/list_voices")  # the example clips, read-only
        assert [row[:2] for row in table["data"]] == [["aishell_s0764_a", "example"], ["aishell_s0764_b", "example"]]
        assert http_status(f"http://127.0.0.1:{port}/") == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
