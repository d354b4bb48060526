"""Visual-token reduction math shared by the reduction fusion plugins (``avgpool``, ``visionzip``, ``fastv``).

Why one module: every method must agree on *how many* tokens a segment keeps (the prompt is sized from that
count before anything is encoded), and the selection rules are pure tensor functions that tests check on their
own. Torch is imported inside the functions, so plugin registration stays light.

Counts: a segment of ``n`` rows keeps :func:`kept_count` rows (``keep * n`` rounded half up, at least one);
average pooling keeps the rows of the :func:`pooled_grid` it pools to, the nearest grid to that count.
"""

from __future__ import annotations

import math
from typing import Any

from .errors import ConfigError, FusionError


def check_keep(keep: float, option: str = "fusion.keep") -> None:
    """Refuse a keep ratio outside (0, 1]; called from the options' ``__post_init__``, before anything loads."""
    if not isinstance(keep, (int, float)) or not 0.0 < float(keep) <= 1.0:
        raise ValueError(
            f"{option} must be in (0, 1] (the fraction of visual tokens kept; 1.0 keeps all); got {keep!r}"
        )


def kept_count(n: int, keep: float) -> int:
    """Rows a segment of ``n`` rows keeps at ratio ``keep``: ``keep * n`` rounded half up, between 1 and n."""
    if n <= 0:
        return 0
    return max(1, min(n, math.floor(keep * n + 0.5)))


def grid_side(n: int, what: str) -> int:
    """The side of a square token grid of ``n`` rows; a non-square count is refused (before encoding)."""
    side = math.isqrt(n)
    if side * side != n:
        raise ConfigError(
            f"{what} needs a square grid of tokens per tile; the projector gives {n} tokens. "
            "Use fusion=visionzip or fusion=fastv, which keep any count"
        )
    return side


def pooled_grid(n: int, keep: float, what: str = "fusion=avgpool") -> tuple[int, int]:
    """``(rows, cols)`` the ``side x side`` grid of ``n`` tokens pools to: rows ``side * sqrt(keep)`` rounded,
    cols chosen so that ``rows * cols`` is nearest :func:`kept_count` (keep=1.0 gives the grid itself)."""
    side = grid_side(n, what)
    rows = max(1, min(side, math.floor(side * math.sqrt(keep) + 0.5)))
    cols = max(1, min(side, math.floor(kept_count(n, keep) / rows + 0.5)))
    return rows, cols


def average_pool(features: Any, keep: float) -> Any:
    """``[n, C]`` (a row-major square grid) -> ``[rows * cols, C]`` by adaptive average pooling of the grid."""
    import torch.nn.functional as F

    rows, cols = pooled_grid(int(features.shape[0]), keep)
    side = math.isqrt(int(features.shape[0]))
    if (rows, cols) == (side, side):
        return features
    grid = features.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(grid.float(), (rows, cols)).to(features.dtype)
    return pooled.permute(0, 2, 3, 1).reshape(rows * cols, -1)


def dominance(features: Any) -> Any:
    """Per row of ``[n, C]``: how far it lies from the segment's mean row (L2). See :func:`visionzip`."""
    x = features.float()
    return (x - x.mean(dim=0, keepdim=True)).norm(dim=-1)


def visionzip(features: Any, keep: float, dominant: float) -> Any:
    """VisionZip-style reduction of one segment ``[n, C]`` to :func:`kept_count` rows.

    Dominant rows: the ``dominant`` share of the kept count with the highest :func:`dominance`, kept as they
    are. Contextual rows: the remaining share; that many targets are spread evenly over the other rows (in grid
    order), every other row joins the target it is most similar to (cosine), and each group is averaged into
    one row. Output rows follow the grid order (a contextual row sits where its target was), so the LLM reads
    the image in the raster order it was trained on.
    """
    import torch

    n = int(features.shape[0])
    k = kept_count(n, keep)
    if k >= n:
        return features
    n_dominant = min(k, max(1, math.floor(k * dominant + 0.5)))
    n_context = k - n_dominant
    x = features.float()
    top = dominance(features).topk(n_dominant).indices
    is_dominant = torch.zeros(n, dtype=torch.bool, device=x.device)
    is_dominant[top] = True
    order = [int(i) for i in top]
    rows = [x[top]]
    if n_context:
        rest = (~is_dominant).nonzero().squeeze(1)
        targets = rest[
            torch.div(torch.arange(n_context, device=x.device) * rest.numel(), n_context, rounding_mode="floor")
        ]
        unit = torch.nn.functional.normalize(x, dim=-1)
        nearest = (unit[rest] @ unit[targets].T).argmax(dim=1)
        nearest[torch.isin(rest, targets)] = torch.arange(n_context, device=x.device)  # a target joins itself
        merged = torch.zeros(n_context, x.shape[1], device=x.device).index_add_(0, nearest, x[rest])
        counts = torch.bincount(nearest, minlength=n_context).clamp(min=1).unsqueeze(1)
        rows.append(merged / counts)
        order += [int(i) for i in targets]
    out = torch.cat(rows)[torch.tensor(order, device=x.device).argsort()]
    return out.to(features.dtype)


def segment_rows(positions: Any, sizes: list[int]) -> list[list[int]]:
    """Split the flat list of segment ``sizes`` (one stream, in batch order) into each row's segments, from the
    placeholder count of every row (``positions``: bool ``[B, T]``); a mismatch is a :class:`FusionError`."""
    per_row = [int(v) for v in positions.sum(dim=1).tolist()]
    out: list[list[int]] = []
    it = iter(sizes)
    for count in per_row:
        mine: list[int] = []
        while sum(mine) < count:
            size = next(it, None)
            if size is None:
                break
            mine.append(size)
        if sum(mine) != count:
            raise FusionError(f"placeholder count {count} of a row does not split into whole segments ({sizes})")
        out.append(mine)
    return out
