"""Speed modes in the Space (`--speed` / CHATTERBOX_SPEED): a mode this machine cannot run stops
the app at start with the reason; an int8 Space generates with every model, says so on the page,
and its recipes record the modes (a recipe of other modes loads with a warning: test_recipe_ui)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request

import pytest
import torch
from gradio_client import Client

from app_server import REPO, check_generated_audio, start_server
from test_app_api import DEFAULTS, generate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("speed,says", [
    ("warp", "unknown fast mode 'warp'; known: int8"),
    ("int8+bf16", "int8 quantizes float32 weights"),
    pytest.param("fp16", "needs a CUDA GPU", marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU case")),
])
def test_a_speed_mode_the_machine_cannot_run_stops_the_app_at_start(tmp_path, speed, says):
    env = dict(os.environ, HF_HUB_OFFLINE="1", CHATTERBOX_SPEED=speed, GRADIO_ANALYTICS_ENABLED="False")
    done = subprocess.run([sys.executable, str(REPO / "app.py"), "--data-dir", str(tmp_path)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--speed: " in done.stderr and says in done.stderr, done.stderr[-2000:]


@pytest.fixture(scope="module")
def int8_app(fake_ckpt, fake_turbo_ckpt, tmp_path_factory):
    log = tmp_path_factory.mktemp("int8-app") / "app.log"
    server = start_server(fake_ckpt, log_path=log,
                          extra_args=("--speed", "int8", "--turbo-checkpoint", str(fake_turbo_ckpt)))
    yield server
    server.stop()


@pytest.mark.parametrize("model,tail", [("English (Chatterbox)", 0), ("Turbo (Chatterbox-Turbo)", 3)])
def test_an_int8_space_generates_says_so_and_records_it_in_recipes(int8_app, tmp_path, model, tail):
    with urllib.request.urlopen(int8_app.url + "/config", timeout=30) as response:
        page = json.dumps(json.load(response))
    assert "Speed modes: quantize=int8" in page
    client = Client(int8_app.url, verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    result = generate(client, None, model_choice=model, text=DEFAULTS["text"])
    check_generated_audio(result.audio, result.notes, int8_app.max_new_tokens, tail_tokens=tail)
    assert result.recipe.speed == "quantize=int8"
