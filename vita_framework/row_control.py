"""Per-row control of one batched generation: each row's own token limit, stop strings, cancel event and text.

:meth:`vita_framework.pipeline.Pipeline.generate_rows` runs a left-padded batch once with the largest limit of
its rows and hands :class:`RowTracker` to the LLM as its streamer and as its cancel event. After every decode
step the tracker sees each row's new token: a row is *done* at its end-of-sequence token, at its own
``max_new_tokens``, at one of its ``stop`` strings, or once its ``cancel`` event is set (a client gone). A done
row's later tokens are ignored, and the whole generation ends within one step of the moment every row is done,
so a cancelled or short row never makes its batch-mates wait or run longer than they would alone, and a
batch-mate's cancellation never changes another row's tokens (rows of a left-padded batch are independent).

Text reaches ``on_text`` as it is decoded: leading whitespace is skipped, trailing whitespace and any tail that
could still become a stop string are held back, so the pieces joined equal the row's final (stripped) text.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RowControl:
    """One row's options (set by the caller) and outcome (filled by the generation)."""

    #: this row's limit of new tokens (None: the batch's generation config)
    max_new_tokens: int | None = None
    #: strings that end the row; the text returned stops before the first one found
    stop: Sequence[str] = ()
    #: set it (from any thread) to end this row within one decode step; the other rows go on
    cancel: threading.Event | None = None
    #: called from the generation thread with each new piece of text
    on_text: Callable[[str], None] | None = None
    # -- outcome --------------------------------------------------------------------------------------
    #: "stop" (end of sequence or a stop string), "length" (the limit), "cancelled"
    finish_reason: str | None = None
    #: ``time.perf_counter()`` when this row's first new token was made
    first_token_at: float | None = None
    ids: list[int] = field(default_factory=list)
    text: str = ""


class RowTracker:
    """A transformers streamer (``put``/``end``) and a cancel event (``is_set``) over the rows of one batch."""

    def __init__(self, tokenizer: Any, controls: list[RowControl], limits: list[int], eos: Sequence[int]) -> None:
        self.tokenizer, self.controls, self.limits = tokenizer, controls, limits
        self.eos = {int(e) for e in eos}
        self._prompt_seen = False
        self._done = [False] * len(controls)
        self._emitted = [0] * len(controls)  # characters of the row's text handed to on_text
        for control in controls:
            control.ids, control.text, control.finish_reason, control.first_token_at = [], "", None, None

    # -- the cancel event the LLM polls after every step ----------------------------------------------------
    def is_set(self) -> bool:
        for i, control in enumerate(self.controls):
            if not self._done[i] and control.cancel is not None and control.cancel.is_set():
                self._finish(i, "cancelled")
        return all(self._done)

    def set(self) -> None:  # the event protocol; the tracker is never set from outside
        pass

    # -- the streamer ----------------------------------------------------------------------------------
    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt (empty for inputs_embeds)
            self._prompt_seen = True
            return
        now = time.perf_counter()
        tokens = value.reshape(-1).tolist()
        for i, token in enumerate(tokens[:len(self.controls)]):
            if self._done[i]:
                continue
            control = self.controls[i]
            if control.cancel is not None and control.cancel.is_set():
                self._finish(i, "cancelled")
                continue
            if control.first_token_at is None:
                control.first_token_at = now
            control.ids.append(int(token))
            if int(token) in self.eos:
                self._finish(i, "stop")
                continue
            self._update_text(i)
            if self._done[i]:
                continue
            if len(control.ids) >= self.limits[i]:
                self._finish(i, "length")

    def end(self) -> None:
        for i in range(len(self.controls)):
            if not self._done[i]:
                self._finish(i, "length")

    # -- text -------------------------------------------------------------------------------------------
    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).lstrip()

    def _update_text(self, i: int) -> None:
        control = self.controls[i]
        text = self._decode(control.ids)
        cut = _first_stop(text, control.stop)
        if cut is not None:
            control.text = text[:cut].rstrip()
            self._finish(i, "stop")
            return
        control.text = text
        if text.endswith("\ufffd"):  # an unfinished UTF-8 sequence: wait for its next token
            return
        safe = len(text.rstrip())
        safe = min(safe, len(text) - _held_for_stop(text, control.stop))
        self._emit(i, safe)

    def _emit(self, i: int, upto: int) -> None:
        control = self.controls[i]
        if upto > self._emitted[i]:
            piece = control.text[self._emitted[i]:upto]
            self._emitted[i] = upto
            if control.on_text is not None:
                control.on_text(piece)

    def _finish(self, i: int, reason: str) -> None:
        control = self.controls[i]
        self._done[i] = True
        control.finish_reason = reason
        if reason != "stop" or _first_stop(control.text, control.stop) is None:
            text = self._decode([t for t in control.ids if t not in self.eos])
            cut = _first_stop(text, control.stop)
            control.text = (text if cut is None else text[:cut]).strip()
        self._emit(i, len(control.text))


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None


def _held_for_stop(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of ``text`` that begin some stop string (they may still become one)."""
    held = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:n]):
                held = n
                break
    return held
