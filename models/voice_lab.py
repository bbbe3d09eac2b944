"""Voice lab: how several voices relate, as a similarity matrix and a 2-D map.

Each clip is embedded with resemblyzer's speaker encoder (`models.similarity`, independent
of the models that clone); the matrix holds pairwise cosine similarities, the map the
first two principal components of the embeddings. A generated output can be tied to the
reference it was cloned from, and the plot draws an arrow from the reference to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_CLIPS = 12       # labels stay readable on the plot
MIN_CLIPS = 2


@dataclass(frozen=True)
class VoiceMap:
    """Labels (n,), unit embeddings (n, D), cosine similarities (n, n) and PCA coordinates (n, 2)."""

    labels: tuple[str, ...]
    embeddings: np.ndarray
    similarity: np.ndarray
    coords: np.ndarray
    pairs: tuple[tuple[int, int], ...] = ()  # (reference index, output index)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """(n, D) -> (n, 2): projections on the two leading principal axes (SVD of the centred data).

    Axes beyond the data's rank are zero; each axis' sign is fixed so its largest loading
    is positive, making the map reproducible.
    """
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    coords = np.zeros((len(x), 2))
    k = min(2, vt.shape[0])
    signs = np.sign(vt[np.arange(k), np.argmax(np.abs(vt[:k]), axis=1)])
    coords[:, :k] = centred @ (vt[:k] * signs[:, None]).T
    return coords


def build_map(similarity, clips: list[tuple[str, np.ndarray, int]],
              pairs: list[tuple[int, int]] | None = None) -> VoiceMap:
    """Embed `clips` [(label, mono samples, rate)] with a SpeakerSimilarity and lay them out.

    `pairs` ties outputs to references by index. Raises ValueError for fewer than 2 or more
    than MAX_CLIPS clips, duplicate labels or a pair index out of range.
    """
    if not MIN_CLIPS <= len(clips) <= MAX_CLIPS:
        raise ValueError(f"the voice lab compares {MIN_CLIPS} to {MAX_CLIPS} clips, got {len(clips)}")
    labels = tuple(str(label) for label, _, _ in clips)
    if len(set(labels)) != len(labels):
        raise ValueError("each clip needs its own label")
    pairs = tuple((int(a), int(b)) for a, b in (pairs or []))
    if any(not (0 <= i < len(clips)) for pair in pairs for i in pair):
        raise ValueError("a pair refers to a clip that is not in the list")
    emb = np.stack([similarity.embed(np.asarray(wav, dtype=np.float32), int(sr)) for _, wav, sr in clips])
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return VoiceMap(labels, emb, np.clip(emb @ emb.T, -1.0, 1.0), pca_2d(emb), pairs)


def render(vmap: VoiceMap, width_px: int = 1100, height_px: int = 480) -> np.ndarray:
    """The matrix (left) and the map (right) as an RGB image (H, W, 3) uint8.

    Uses matplotlib's object API with the Agg canvas: no pyplot, no global backend switch.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax_m, ax_p = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.2]})
    n = len(vmap.labels)
    image = ax_m.imshow(vmap.similarity, vmin=0.0, vmax=1.0, cmap="viridis")
    ax_m.set_xticks(range(n), vmap.labels, rotation=45, ha="right", fontsize=8)
    ax_m.set_yticks(range(n), vmap.labels, fontsize=8)
    for i in range(n):
        for j in range(n):
            value = vmap.similarity[i, j]
            ax_m.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if value > 0.6 else "white")
    ax_m.set_title("Speaker similarity (cosine)")
    fig.colorbar(image, ax=ax_m, fraction=0.046, pad=0.04)

    xy = vmap.coords
    outputs = {b for _, b in vmap.pairs}
    for i, label in enumerate(vmap.labels):
        marker = "*" if i in outputs else "o"
        ax_p.scatter(xy[i, 0], xy[i, 1], s=140 if marker == "*" else 70, marker=marker, zorder=3)
        ax_p.annotate(label, xy[i], textcoords="offset points", xytext=(6, 6), fontsize=9)
    for ref, out in vmap.pairs:
        ax_p.annotate("", xy=xy[out], xytext=xy[ref], zorder=2,
                      arrowprops={"arrowstyle": "->", "color": "gray", "lw": 1.2})
    span = max(float(np.ptp(xy[:, 0])), float(np.ptp(xy[:, 1])), 1e-3)
    ax_p.set_xlim(xy[:, 0].min() - 0.25 * span, xy[:, 0].max() + 0.35 * span)
    ax_p.set_ylim(xy[:, 1].min() - 0.25 * span, xy[:, 1].max() + 0.35 * span)
    ax_p.set_title("Voice map (PCA of speaker embeddings; * = generated output)")
    ax_p.title.set_fontsize(9)
    ax_p.set_xlabel("component 1")
    ax_p.set_ylabel("component 2")
    ax_p.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
