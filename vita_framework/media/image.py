"""Reading user inputs (image files) with errors that name the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import InputError


def load_image(source: Any) -> Any:
    """A path or a PIL image -> an RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    path = Path(str(source)).expanduser()
    if not path.is_file():
        raise InputError(f"image file '{path}' does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"image file '{path}' is empty")
    try:
        with Image.open(path) as image:
            image.load()
            rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"image file '{path}' cannot be read as an image ({exc}); use PNG, JPEG, WebP, ...") from None
    if rgb.width < 1 or rgb.height < 1:
        raise InputError(f"image file '{path}' has no pixels")
    return rgb
