"""Files that are bad inputs on purpose, shared by the CLI table (test_bad_inputs) and the in-process checks
(test_bad_input_checks): PNGs whose header claims a size they do not have, frame directories with such a frame,
and a directory nobody may write."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

HUGE = 100_000  # a 100000x100000 header: 10 gigapixels, a decompression bomb for Pillow too


def write_png(path: Path, width: int = 8, height: int = 8) -> Path:
    """An 8x8 PNG whose IHDR claims ``width`` x ``height`` (CRC fixed): Pillow reads that size from the header."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def write_frames(path: Path, bomb_at: int | None = None) -> Path:
    path.mkdir()
    for i in range(4):
        write_png(path / f"{i}.png", *((HUGE, HUGE) if i == bomb_at else (8, 8)))
    return path


#: a directory no process may write, root included (sysfs): the fallback where neither mode nor chattr locks
UNWRITABLE_FALLBACK = Path("/sys/fs")


def locked_dir(path: Path) -> Path:
    """A directory nobody may write: mode 0555, or (as root, who ignores modes) immutable, or else sysfs."""
    path.mkdir()
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return path
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        return path
    path.chmod(0o755)
    return UNWRITABLE_FALLBACK


def unlock(path: Path) -> None:
    if path != UNWRITABLE_FALLBACK:
        if shutil.which("chattr"):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o755)
