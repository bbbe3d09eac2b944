"""The load test's short form (bench/load_test.py): a few concurrent clients through gradio_client
and the OpenAI API against a Space batching T3 (fake checkpoint, a few tokens per request).
Every request is answered once with the audio it gets alone, and a client that leaves
mid-generation frees its T3 rows."""
from __future__ import annotations

import pytest

from app_server import ARTIFACTS

pytestmark = pytest.mark.slow


def test_concurrent_clients_are_each_answered_once_with_their_serial_audio(fake_ckpt, tmp_path):
    from bench import load_test

    figures = load_test.run(fake_ckpt, clients=4, total=6, tokens=6, batch_size=3, distinct=2, work_dir=tmp_path,
                            log_path=ARTIFACTS / "load-test-ci-server.log", rss=False, drops=("openai",))
    assert figures["answered_once"] and figures["errors"] == 0, figures["first_error"]
    assert figures["equal_to_serial"] == figures["requests"], figures
    assert figures["max_active_seen"] >= 2, figures  # the clients' generations shared T3's steps
    for channel in ("gradio", "openai"):
        assert figures["first_audio_s"][channel]["n"] == 3 and figures["done_s"][channel]["n"] == 3
    (drop,) = figures["drops"]
    assert drop["empty"] and drop["joined"] < drop["chunks"], drop  # rows freed, the request stopped
