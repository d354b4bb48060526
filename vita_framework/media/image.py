"""Reading user inputs (image files) with errors that name the file.

An image's size is read from its header (``Image.open`` is lazy) and compared with a pixel limit before a
single pixel is decoded, so a decompression bomb (a small file whose header claims 100000x100000 pixels) or a
needlessly huge photo is refused in milliseconds instead of allocating gigabytes. The limit is the ``image``
modality's ``image.max_pixels`` option (``video.max_pixels`` for the frames of a frame directory).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

from ..errors import InputError

#: default pixel limit of one image or frame (``image.max_pixels``, ``video.max_pixels``): about 8660x5773
DEFAULT_MAX_PIXELS = 50_000_000


def load_image(source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, setting: str = "image.max_pixels"
               ) -> Any:
    """A path or a PIL image -> an RGB PIL image; a file over ``max_pixels`` (None: Pillow's own limit only) is
    refused from its header, naming ``setting`` (the option that raises the limit)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(str(source)).expanduser()
    if not path.is_file():
        raise InputError(f"image file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"image file '{path}' is empty")
    try:
        with open_image(path, max_pixels=max_pixels, setting=setting, what=f"image file '{path}'") as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file '{path}' cannot be read as an image ({exc}); use PNG, JPEG, WebP, ...") from None
    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"image file '{path}' has no pixels")
    return rgb


def check_image(source: Any, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, setting: str = "image.max_pixels"
                ) -> None:
    """The checks :func:`load_image` makes before decoding (a readable header within ``max_pixels``), alone:
    cheap enough to run on a request before any model work. An image object in memory passes."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return
    path = Path(str(source)).expanduser()
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(f"image file '{path}' {'is empty' if path.is_file() else 'does not exist'}")
    try:
        with open_image(path, max_pixels=max_pixels, setting=setting):
            pass
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file '{path}' cannot be read as an image ({exc}); use PNG, JPEG, WebP, ...") from None


def open_image(path: str | Path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, setting: str = "image.max_pixels",
               what: str | None = None) -> Any:
    """``Image.open(path)`` (header only, nothing decoded), refused with an :class:`InputError` when the header's
    width x height exceeds ``max_pixels`` or Pillow's decompression-bomb limit. Use it as a context manager.

    Pillow raises ``DecompressionBombError`` above twice its ``MAX_IMAGE_PIXELS`` (about 179 MP) during
    ``open``; a ``max_pixels`` set higher than that raises Pillow's limit to match (never lowers it), so the
    configured limit is the one that decides. Pillow's warning between the two is silenced: the limit here is
    the check.
    """
    from PIL import Image

    what = what or f"image file '{path}'"
    _allow_pixels(max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError as exc:
            found = re.search(r"\((\d+) pixels\)", str(exc))
            claims = f"{int(found.group(1)):,} pixels" if found else "more pixels than Pillow allows"
            raise InputError(_too_large(what, f"claims {claims} in its header", max_pixels, setting, bomb=True)) \
                from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise InputError(_too_large(what, f"is {width}x{height} ({width * height:,} pixels)", max_pixels, setting))
    return image


def pad_to_square(image: Any, fill: Any) -> Any:
    """``image`` (PIL, any mode) centred on a square canvas of ``fill``, its longer side long (VITA's
    expand2square). The one place the padded geometry is defined: a tower's ``pad_to_square`` pads the image with
    it, and training pads its label masks with it, so labels and pixels line up."""
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def _too_large(what: str, size: str, max_pixels: int | None, setting: str, *, bomb: bool = False) -> str:
    limit = f"the limit of {max_pixels:,} pixels ({setting})" if max_pixels is not None else \
        "Pillow's decompression-bomb limit"
    doubt = " (a decompression bomb or a corrupt header?)" if bomb else ""
    return (f"{what} {size}, over {limit}{doubt}; downscale the image, or raise the limit with {setting}=<pixels> "
            "if you trust the file")


def _allow_pixels(max_pixels: int | None) -> None:
    """Raise Pillow's process-wide bomb limit so that it never refuses an image ``max_pixels`` allows."""
    from PIL import Image

    current = Image.MAX_IMAGE_PIXELS
    if max_pixels is not None and current is not None and max_pixels > current:
        Image.MAX_IMAGE_PIXELS = int(max_pixels)
