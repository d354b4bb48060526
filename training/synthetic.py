"""Synthetic visual questions: scenes of simple shapes with short, unambiguous answers.

The embedded default bundle is trained on this data (``python -m vita_framework.train``) so that the tiny model
answers real questions about images instead of emitting noise, and the tests can check that the image actually
reaches the LLM (the answers cannot be guessed from the text alone).

A scene holds one to four shapes. Within a scene every shape has a different kind, a different colour and a
different place (one of five zones, anywhere inside it: :func:`position_of` is the rule), so every question below
has exactly one correct answer. Scenes vary what a user's own drawing varies: size (small to filling the frame
when alone), position, rotation, filled or outlined, background tint, pixel noise, JPEG compression and the
canvas aspect ratio (the bundle sees the canvas resized to one square tile). The held-out split is rendered with
settings training never sees (:data:`HELDOUT_STYLE`).

* ``What shape is <colour>?`` -> ``circle``
* ``What colour is the <shape>?`` -> ``red``
* ``How many shapes are there?`` -> ``two``
* ``Where is the <colour> <shape>?`` -> ``left`` / ``right`` / ``top`` / ``bottom`` / ``center``
* ``Describe this image.`` -> ``a red circle and a blue square`` (shapes in the fixed order of ``SHAPES``)

Everything is a pure function of ``(DATA_VERSION, split, index)``: the same index always gives the same image,
question and answer, on any machine. Bump ``DATA_VERSION`` whenever the output of any function changes.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from .scenes import (  # noqa: F401  (the data's vocabulary and scene types, re-exported for its users)
    COLOURS,
    HELDOUT_STYLE,
    IMAGE_SIZE,
    INTERIOR,
    MAX_SHAPES,
    POSITIONS,
    SHAPES,
    STYLES,
    TRAIN_STYLE,
    UNSEEN,
    Scene,
    Shape,
    Style,
    make_scene,
    position_of,
)

DATA_VERSION = "shapes-v3"
NUMBERS = ("zero", "one", "two", "three", "four")
QUESTION_KINDS = ("shape", "colour", "count", "position", "describe")
DESCRIBE = "Describe this image."
COUNT = "How many shapes are there?"
# seeds of the two splits: disjoint streams of scenes
SPLIT_SEEDS = {"train": 1, "heldout": 2}


@dataclass(frozen=True)
class Example:
    """One visual question: the scene (render it for the image), the question, its short answer."""

    scene: Scene
    question: str
    answer: str
    kind: str
    index: int
    split: str

    def image(self, size: int = IMAGE_SIZE) -> Any:
        return self.scene.render(size)


def _rng(split: str, index: int, salt: str = "") -> random.Random:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split '{split}'; use one of {', '.join(SPLIT_SEEDS)}")
    return random.Random(f"{DATA_VERSION}/{SPLIT_SEEDS[split]}/{index}/{salt}")


def make_question(scene: Scene, rng: random.Random, kind: str | None = None) -> tuple[str, str, str]:
    """A (question, answer, kind) about ``scene``; ``kind`` picks the question type (default: uniform)."""
    kind = kind or rng.choice(QUESTION_KINDS)
    target = rng.choice(scene.shapes)
    if kind == "shape":
        return f"What shape is {target.colour}?", target.kind, kind
    if kind == "colour":
        return f"What colour is the {target.kind}?", target.colour, kind
    if kind == "count":
        return COUNT, NUMBERS[len(scene.shapes)], kind
    if kind == "position":
        return f"Where is the {target.colour} {target.kind}?", target.position, kind
    if kind == "describe":
        return DESCRIBE, scene.description(), kind
    raise ValueError(f"unknown question kind '{kind}'; use one of {', '.join(QUESTION_KINDS)}")


def scene_examples(split: str, index: int, k: int = 1, max_shapes: int = MAX_SHAPES) -> list[Example]:
    """``k`` questions about the ``index``-th scene of ``split`` (the first one is ``example(split, index)``).

    Training asks several questions per scene so one encoded image serves several sequences, and starts with
    one-shape scenes (``max_shapes=1``: reading an attribute is learnt before binding attributes to shapes).
    """
    rng = _rng(split, index, "" if max_shapes == MAX_SHAPES else f"max{max_shapes}")
    scene = make_scene(rng, max_shapes=max_shapes, style=STYLES[split])
    out = []
    for _ in range(k):
        question, answer, kind = make_question(scene, rng)
        out.append(Example(scene, question, answer, kind, index, split))
    return out


def scene_questions(split: str, index: int, k: int, epoch: int = 0, max_shapes: int = MAX_SHAPES) -> list[Example]:
    """``k`` questions about the ``index``-th scene of ``split``: ``scene_examples``' own at epoch 0, fresh ones
    about the same scene at later epochs (training that cycles through a pool of scenes asks new questions)."""
    first = scene_examples(split, index, k if epoch == 0 else 1, max_shapes)
    if epoch == 0:
        return first
    scene = first[0].scene
    rng = _rng(split, index, f"epoch{epoch}" + ("" if max_shapes == MAX_SHAPES else f"max{max_shapes}"))
    return [Example(scene, *make_question(scene, rng), index, split) for _ in range(k)]


def example(split: str, index: int) -> Example:
    """The ``index``-th example of ``split`` (a pure function of the data version, split and index)."""
    return scene_examples(split, index, 1)[0]


def examples(split: str, n: int, start: int = 0) -> list[Example]:
    """``n`` consecutive examples of ``split`` from ``start``."""
    return [example(split, i) for i in range(start, start + n)]


def questions_for(scene: Scene) -> list[tuple[str, str, str]]:
    """Every distinct question about ``scene`` with its answer and kind (for inspection and tests)."""
    out = [(DESCRIBE, scene.description(), "describe"), (COUNT, NUMBERS[len(scene.shapes)], "count")]
    for s in scene.shapes:
        out += [(f"What shape is {s.colour}?", s.kind, "shape"), (f"What colour is the {s.kind}?", s.colour, "colour"),
                (f"Where is the {s.colour} {s.kind}?", s.position, "position")]
    return out


def corpus() -> list[str]:
    """Every question and every answer word, each as its own line (for training the bundle's tokenizer, so
    that an answer such as ``triangle`` -- which starts the assistant's turn -- is one token)."""
    lines = [DESCRIBE, COUNT, *NUMBERS, *SHAPES, *COLOURS, *POSITIONS]
    for shape in SHAPES:
        for colour in COLOURS:
            lines += [f"What shape is {colour}?", f"What colour is the {shape}?", f"Where is the {colour} {shape}?",
                      f"a {colour} {shape}"]
    lines += ["a red circle and a blue square", "a red circle, a blue square and a green triangle",
              "a red circle, a blue square, a green triangle and a yellow star"]
    return lines


def normalise(text: str) -> str:
    """How answers are compared: lower case, outer whitespace and final full stop dropped, spaces collapsed."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


def is_correct(prediction: str, answer: str) -> bool:
    return normalise(prediction) == normalise(answer)
