"""Weight averaging: a stage's trained weights replaced, at its end, by their mean over its last steps.

Why: the speech stage's result in the one held-out voice moved by ~10 points between runs that differ only in
float summation order (README), i.e. where on a flat stretch of the loss the last step happened to land. The
mean of the weights visited over the stage's later part (stochastic weight averaging) sits nearer the middle of
that stretch, which often holds up better on data unlike the training data (here: an unseen accent). Measured
on the speech stage over two seeds it was neutral (README): after a cosine decay the later weights lie close.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from vita_framework.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where weights are touched, so checking a config stays light
    import torch


def average_start(option: object, steps: int, name: str) -> int | None:
    """The first step averaged for the config value ``option`` at ``name`` (a fraction of the stage's ``steps``
    in [0, 1), or null: no averaging); a ``ConfigError`` naming the key otherwise."""
    if option is None:
        return None
    if isinstance(option, bool) or not isinstance(option, (int, float)) or not 0 <= option < 1:
        raise ConfigError(f"{name} must be null (no averaging) or a fraction of the stage's steps in [0, 1) after "
                          f"which the weights are averaged (e.g. 0.5: the second half); got {option!r}")
    return int(option * steps)


def average_problems(cfg: Any) -> list[str]:
    """The messages of every ``average_from`` option (answer stage, speech stage) the config gets wrong."""
    problems = []
    speech = cfg.get("speech") or {}
    for name, option in (("average_from", cfg.get("average_from")),
                         ("speech.average_from", speech.get("average_from"))):
        try:
            average_start(option, 1, name)
        except ConfigError as exc:
            problems.append(str(exc))
    return problems


class WeightAverage:
    """The running mean of ``params`` over every step from ``start`` on; :meth:`apply` writes it into them."""

    def __init__(self, params: Iterable[torch.nn.Parameter], start: int) -> None:
        self.params = list(params)
        self.start = start
        self.count = 0
        self.mean: list[torch.Tensor] = []

    def update(self, step: int) -> None:
        """Fold the weights after optimiser step ``step`` (0-based) into the mean, once ``step >= start``."""
        if step < self.start:
            return
        import torch

        self.count += 1
        with torch.no_grad():
            if not self.mean:
                self.mean = [p.detach().clone() for p in self.params]
                return
            for mean, param in zip(self.mean, self.params):
                mean.lerp_(param.detach(), 1.0 / self.count)

    def apply(self) -> int:
        """Replace the weights by their mean (nothing when no step was averaged); returns the steps averaged."""
        import torch

        with torch.no_grad():
            for mean, param in zip(self.mean, self.params):
                param.copy_(mean)
        return self.count
