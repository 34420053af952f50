"""Random free-form strokes (DeepFill v2 style) for training and evaluating texture completion."""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch


def free_form_strokes(height: int, width: int, rng: np.random.Generator, *, max_strokes: int = 4,
                      max_vertices: int = 10, max_width_frac: float = 0.08, max_length_frac: float = 0.25
                      ) -> np.ndarray:
    """DeepFill v2-style random free-form mask (H,W) bool: 1..max_strokes polylines of 4..max_vertices
    segments with random angles, segment lengths up to ``max_length_frac * min(H,W)`` and brush widths up to
    ``max_width_frac * min(H,W)``, round joints, anywhere in the image."""
    mask = np.zeros((height, width), np.uint8)
    side = min(height, width)
    max_len = max(2.0, max_length_frac * side)
    max_w = max(2, int(max_width_frac * side))
    for _ in range(int(rng.integers(1, max_strokes + 1))):
        n = int(rng.integers(4, max_vertices + 1))
        x, y = float(rng.uniform(0, width)), float(rng.uniform(0, height))
        angle = float(rng.uniform(0, 2 * math.pi))
        brush = int(rng.integers(max(1, max_w // 4), max_w + 1))
        for i in range(n):
            # mostly smooth turns, sometimes sharp ones (the look of hand-drawn strokes)
            angle += float(rng.normal(0.0, 0.6)) + (math.pi if i % 2 and rng.random() < 0.2 else 0.0)
            length = float(rng.uniform(max_len / 4, max_len))
            nx = float(np.clip(x + length * math.cos(angle), 0, width - 1))
            ny = float(np.clip(y + length * math.sin(angle), 0, height - 1))
            cv2.line(mask, (int(x), int(y)), (int(nx), int(ny)), 1, brush)
            cv2.circle(mask, (int(nx), int(ny)), brush // 2, 1, -1)
            x, y = nx, ny
    return mask.astype(bool)


def training_holes(visible: torch.Tensor, generator: torch.Generator, *, min_frac: float = 0.02,
                   tries: int = 5, **stroke_kwargs) -> torch.Tensor:
    """Random strokes inside each map's visible region: visible (B,H,W) bool -> holes (B,H,W) bool (subset of
    ``visible``). Each map's strokes are redrawn (up to ``tries`` times) until they hide at least ``min_frac``
    of its visible texels. Reproducible from ``generator``."""
    B, H, W = visible.shape
    vis = visible.cpu().numpy()
    out = np.zeros((B, H, W), bool)
    for b in range(B):
        need = min_frac * vis[b].sum()
        for _ in range(tries):
            seed = int(torch.randint(0, 2**62, (1,), generator=generator).item())
            holes = free_form_strokes(H, W, np.random.default_rng(seed), **stroke_kwargs) & vis[b]
            if holes.sum() >= need:
                break
        out[b] = holes
    return torch.from_numpy(out).to(visible.device)
