"""A new input modality: depth maps, with its own loader, encoder kind and Hydra config group (no torch at import).

Everything the framework needs to accept ``depths=[a.npy]`` is the :class:`~vita_framework.modalities.Modality`
entry below, registered through ``vita_register_modalities``:

- the request key ``depths`` (CLI ``depths=[...]``, API ``generate(..., depths=[...])``, a JSONL row's ``depths``)
  and the prompt marker ``<depth>`` (one per map, or none: the maps go before the question);
- the encoder kind ``depth``: a new registry kind and config group (``+depth=patch_cnn``), filled through the
  generic ``vita_register_encoders`` hook by :func:`build_depth_patch_cnn`;
- the loader (:func:`load_depth`: a 2-D float ``.npy`` file, or an array in memory) and ``prepare`` (maps -> the
  encoder's batch, one segment per map);
- its own placeholder id (-600) and stream: the encoder already outputs the LLM width (``projected=False``), so
  the vision projector is not involved.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vita_framework.modalities import LoadContext, Modality

#: placeholder id of depth tokens in the prompt ids (negative: never a real token; -200/-500 are image/audio)
DEPTH_PLACEHOLDER = -600


# -- the modality: load and prepare ---------------------------------------------------------------------
def load_depth(source: Any, context: LoadContext) -> Any:
    """A depth map as a float32 ``[H, W]`` numpy array, from a ``.npy`` path or an array / CPU tensor.

    Refused with an :class:`~vita_framework.errors.InputError` naming the file: a missing or unreadable file,
    an ``.npz`` archive, anything but 2-D, integer or boolean values, an empty map, NaN or infinite values.
    """
    import numpy as np

    from vita_framework.errors import InputError

    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        name = f"depth map '{path}'"
        if not path.is_file():
            raise InputError(f"{name} does not exist" if not path.exists() else f"{name} is not a file")
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{name} cannot be read as a .npy array ({exc}); write one with "
                             "numpy.save(path, depth_map)") from None
        if not isinstance(array, np.ndarray):  # np.load gives an NpzFile for .npz archives
            array.close()
            raise InputError(f"{name} is an .npz archive; save the one depth map with numpy.save(path, depth_map)")
    elif hasattr(source, "shape") and hasattr(source, "dtype"):
        name = "depth array"
        array = np.asarray(source)
    else:
        raise InputError(f"a depth map must be a .npy file path or a 2-D float array; got {type(source).__name__}")
    if array.ndim != 2:
        hint = " (a [H, W, 1] map: save depth_map[..., 0])" if array.ndim == 3 and array.shape[-1] == 1 else ""
        raise InputError(f"{name} must be a 2-D array (height, width) of depths; got shape {array.shape}{hint}")
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(f"{name} must hold floating-point depths (float16/32/64); got dtype {array.dtype}. "
                         "Convert it with depth_map.astype('float32')")
    if array.size == 0:
        raise InputError(f"{name} is empty (shape {array.shape})")
    finite = np.isfinite(array)
    if not finite.all():
        bad = int((~finite).sum())
        row, col = (int(i) for i in np.argwhere(~finite)[0])
        kind = "NaN" if np.isnan(array).any() else "infinite"
        raise InputError(f"{name} holds {bad} {kind} (or non-finite) value(s), the first at row {row}, column "
                         f"{col}; fill the holes (e.g. numpy.nan_to_num) before saving")
    return array.astype(np.float32, copy=False)


def prepare_depths(encoder: Any, maps: list[Any]) -> Any:
    """Depth maps -> the encoder's batch; every map is one segment (one ``<depth>`` run in the prompt)."""
    from vita_framework.contracts import EncoderInput

    return EncoderInput(encoder.preprocess(maps), [1] * len(maps))


DEPTH = Modality(
    name="depth", marker="<depth>", request_key="depths", encoder="depth", load=load_depth,
    prepare=prepare_depths, placeholder_id=DEPTH_PLACEHOLDER, projected=False, position="before",
    budget_hint="fewer depth tokens (a larger depth.patch_size or a smaller depth.image_size)",
    description="depth maps: 2-D float .npy files (height, width); one <depth> run per map, before the question",
)


# -- the encoder: options and factory ---------------------------------------------------------------------
@dataclass
class DepthPatchCNNOptions:
    """Options of ``depth_patch_cnn``, validated by the framework (typos and bad values name ``depth.<key>``)."""

    image_size: int = 64  # every map is resized to image_size x image_size
    patch_size: int = 16  # one token per patch: (image_size / patch_size)^2 tokens per map
    width: int = 32  # channels of the convolutional stem
    max_depth: float | None = None  # depths are divided by this and clipped to [0, 1]; None: per-map min-max
    weights_prefix: str = "model.depth_encoder."  # trained tensors, if the bundle has them; random otherwise

    def __post_init__(self) -> None:
        for name in ("image_size", "patch_size", "width"):
            if getattr(self, name) < 1:
                raise ValueError(f"depth.{name} must be >= 1; got {getattr(self, name)}")
        if self.image_size % self.patch_size:
            raise ValueError(f"depth.image_size={self.image_size} must be a multiple of "
                             f"depth.patch_size={self.patch_size}")
        if self.max_depth is not None and not self.max_depth > 0:
            raise ValueError(f"depth.max_depth must be > 0 (or null for per-map min-max); got {self.max_depth}")


def build_depth_patch_cnn(options: DepthPatchCNNOptions, context: Any) -> Any:
    """The factory: the LLM's width from the built LLM, weights from the bundle's prefix or random (loudly)."""
    from vita_framework.component_weights import module_from_bundle
    from vita_framework.errors import ConfigError

    from ._depth_impl import DepthPatchEncoder

    llm = context.components.get("llm")
    if llm is None:
        raise ConfigError("the depth encoder needs the built LLM (its hidden size); build it through "
                          "vita_framework.build")

    def make() -> Any:
        return DepthPatchEncoder(int(llm.hidden_size), image_size=options.image_size, patch_size=options.patch_size,
                                 width=options.width, max_depth=options.max_depth)

    return module_from_bundle(make, context, options.weights_prefix, name="depth_patch_cnn",
                              random_note="answers about depth maps are noise")
