"""How close a cloned voice is to its reference: cosine similarity of speaker embeddings
from resemblyzer's bundled pretrained encoder (independent of the model that cloned it)."""
from __future__ import annotations

import numpy as np


class SpeakerSimilarity:
    """Wraps resemblyzer's VoiceEncoder; CPU, weights shipped inside the package."""

    def __init__(self) -> None:
        from resemblyzer import VoiceEncoder

        self._encoder = VoiceEncoder(device="cpu", verbose=False)

    def embed(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        from resemblyzer import preprocess_wav

        # preprocess_wav normalises loudness and drops long pauses (webrtcvad), as resemblyzer expects.
        prepared = preprocess_wav(np.asarray(wav, dtype=np.float32), source_sr=sample_rate)
        if prepared.size < 1_600:  # 0.1 s at resemblyzer's 16 kHz
            prepared = np.asarray(wav, dtype=np.float32)  # almost no voiced audio: embed what there is
        return self._encoder.embed_utterance(prepared)

    def partials(self, wav: np.ndarray, sample_rate: int) -> np.ndarray:
        """(P, 256) unit embeddings of the clip's 1.6 s windows (resemblyzer's partials, hop ~0.77 s)
        after its preprocessing (pauses dropped); P = 0 when under 0.1 s of voiced audio remains."""
        from resemblyzer import preprocess_wav

        prepared = preprocess_wav(np.asarray(wav, dtype=np.float32), source_sr=sample_rate)
        if prepared.size < 1_600:
            return np.zeros((0, 256), dtype=np.float32)
        _, partials, _ = self._encoder.embed_utterance(prepared, return_partials=True)
        return partials

    def score(self, wav_a: np.ndarray, sr_a: int, wav_b: np.ndarray, sr_b: int) -> float:
        a, b = self.embed(wav_a, sr_a), self.embed(wav_b, sr_b)
        return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
