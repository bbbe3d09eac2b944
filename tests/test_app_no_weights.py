"""Without any weights (offline, nothing cached) the Space still starts, says why and how
to provide weights, and refuses to generate instead of serving random output."""
import os
import subprocess
import sys
import time

import pytest

from app_server import REPO, free_port, http_status

pytestmark = pytest.mark.slow


def test_app_starts_without_weights_and_says_why(tmp_path):
    from gradio_client import Client

    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "empty-cache"),
               GRADIO_ANALYTICS_ENABLED="False", GRADIO_TEMP_DIR=str(tmp_path / "gradio"))
    env.pop("CHATTERBOX_CHECKPOINT", None)
    log = (tmp_path / "app.log").open("w")
    proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), "--host", "127.0.0.1", "--port", str(port)],
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
        assert http_status(f"http://127.0.0.1:{port}/") == 200  # still serving
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
