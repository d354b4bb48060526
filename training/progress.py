"""Progress bars for training stages and held-out scoring (tqdm, on stderr beside the log lines).

Why: a full run takes tens of minutes on two cores; a bar per stage with its rate and ETA says how long is left
without reading step logs. Bars are refreshed at most once a second, so a log file or CI output captured from
stderr stays short.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str, unit: str = "step") -> Iterator[T]:
    """``items`` with a progress bar named ``desc`` (rate and ETA) on stderr."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar: Any = tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0, dynamic_ncols=True,
                    leave=True)
    with logging_redirect_tqdm():  # log lines print above the bar instead of through it
        yield from bar
