"""A picture of a ranking: one row per query, the query crop then its top-k gallery items, each
framed green when it is a true match and red when it is not (junk items, i.e. the query's own
identity in the query's camera, are left out as in the metric). Tracklets show their first frame.
OpenCV only, no matplotlib."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from reid.models.preprocess import read_image
from reid.training.evaluate import Ranking

CELL_H, CELL_W, BORDER, GAP = 128, 64, 4, 8
GREEN, RED, GREY = (0, 170, 0), (0, 0, 220), (90, 90, 90)


def _cell(path: str, color: tuple[int, int, int], label: str) -> np.ndarray:
    size = (CELL_W - 2 * BORDER, CELL_H - 2 * BORDER)
    img = cv2.resize(read_image(path), size, interpolation=cv2.INTER_AREA)
    cell = cv2.copyMakeBorder(img, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=color)
    band = np.full((14, CELL_W, 3), 255, np.uint8)
    cv2.putText(band, label, (2, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([cell, band])


def ranking_rows(ranking: Ranking, n: int, topk: int = 10) -> list[tuple[int, list[tuple[int, bool]]]]:
    """For ``n`` queries spread evenly over the query list (so not all of one identity):
    (query index, [(gallery index, is_match) × topk]), junk skipped."""
    rows = []
    picks = np.unique(np.linspace(0, len(ranking.query) - 1, min(n, len(ranking.query))).round().astype(int))
    for qi in picks.tolist():
        q = ranking.query[qi]
        picked = []
        for gi in np.argsort(ranking.dist[qi], kind="stable"):
            g = ranking.gallery[gi]
            if g.pid == q.pid and g.camid == q.camid:
                continue
            picked.append((int(gi), g.pid == q.pid))
            if len(picked) == topk:
                break
        rows.append((qi, picked))
    return rows


def draw_ranking(ranking: Ranking, n: int, out: str | Path, topk: int = 10) -> Path:
    """Write the grid PNG to ``out`` and return its path."""
    out = Path(out)
    lines = []
    for qi, picked in ranking_rows(ranking, n, topk):
        q = ranking.query[qi]
        cells = [_cell(q.paths[0], GREY, f"q {q.pid}"), np.full((CELL_H + 14, GAP, 3), 255, np.uint8)]
        for r, (gi, ok) in enumerate(picked):
            g = ranking.gallery[gi]
            cells.append(_cell(g.paths[0], GREEN if ok else RED, f"{r + 1}: {g.pid}"))
        width = CELL_W * (topk + 1) + GAP
        row = np.hstack(cells)
        row = np.hstack([row, np.full((row.shape[0], width - row.shape[1], 3), 255, np.uint8)])
        lines.append(row)
    if not lines:
        raise ValueError("nothing to visualise (no queries)")
    grid = np.vstack([np.vstack([r, np.full((4, r.shape[1], 3), 255, np.uint8)]) for r in lines])
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), grid):
        raise ValueError(f"cannot write {out} (use a .png path)")
    return out
