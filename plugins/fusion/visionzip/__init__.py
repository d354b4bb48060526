"""VisionZip-style visual-token reduction: dominant tokens kept, the rest merged into a few contextual tokens.

VisionZip (Yang et al., CVPR 2025) observes that a vision encoder concentrates an image's information in a few
tokens and selects, before the LLM and independently of the question, (1) the *dominant* tokens and (2) a few
*contextual* tokens, each the average of a group of similar remaining tokens. The paper splits the budget about
54 : 10 between them. Here the split is ``dominant`` (0.84 of the kept tokens), the kept count per tile is
``keep`` of its tokens, and selection runs on each tile or frame's projected features, as the fusion contract
hands them over: dominance is a token's distance from its tile's mean feature (the paper reads the encoder's
attention maps, which do not leave the encoder here; see docs/token-reduction.md for why and how the two
compare). The math lives in :func:`vita_framework.token_reduction.visionzip`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.fusion import SpliceFusion
from vita_framework.hookspecs import hookimpl
from vita_framework.token_reduction import check_keep, kept_count


@dataclass
class VisionZipOptions:
    keep: float = 0.5  # fraction of each tile's tokens kept, in (0, 1]
    dominant: float = 0.84  # share of the kept tokens that are dominant (the rest are merged contextual tokens)
    streams: list[str] = field(default_factory=lambda: ["image"])  # placeholder streams reduced

    def __post_init__(self) -> None:
        check_keep(self.keep)
        if not 0.0 < self.dominant <= 1.0:
            raise ValueError(
                f"fusion.dominant must be in (0, 1] (share of kept tokens that are dominant); got {self.dominant}"
            )


class VisionZipFusion(SpliceFusion):
    """Dominant + contextual token selection per segment, then the splice fusion."""

    def __init__(self, keep: float, dominant: float, streams: list[str]) -> None:
        self.keep, self.dominant, self.streams = float(keep), float(dominant), list(streams)

    def reduced_tokens(self, stream: str, tokens: list[int], groups: list[int]) -> list[int]:
        if stream not in self.streams:
            return list(tokens)
        return [kept_count(n, self.keep) for n in tokens]

    def reduce(self, stream: str, features: list[Any], groups: list[int]) -> list[Any]:
        from vita_framework.token_reduction import visionzip

        if stream not in self.streams or self.keep >= 1.0:
            return features
        return [visionzip(f, self.keep, self.dominant) for f in features]


def build_visionzip(options: VisionZipOptions, context: Any) -> VisionZipFusion:
    return VisionZipFusion(options.keep, options.dominant, options.streams)


@hookimpl
def vita_register_fusion_strategies(register):
    register(
        "visionzip",
        build_visionzip,
        schema=VisionZipOptions,
        description="VisionZip-style reduction before the LLM: `keep` of each tile's tokens, dominant ones "
        "kept and the rest merged into contextual tokens by similarity, then splice",
    )
