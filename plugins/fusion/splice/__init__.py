"""Splice fusion: every placeholder position receives one feature row, in order (VITA-1.5's fusion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vita_framework.hookspecs import hookimpl


@dataclass
class SpliceOptions:
    pass


def build_splice(options: SpliceOptions, context: Any) -> Any:
    from vita_framework.fusion import SpliceFusion

    return SpliceFusion()


@hookimpl
def vita_register_fusion_strategies(register):
    register("splice", build_splice, schema=SpliceOptions,
             description="one placeholder per feature token, masked_scatter with a count check")
