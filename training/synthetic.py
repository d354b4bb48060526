"""Synthetic visual questions: scenes of simple shapes with short, unambiguous answers.

The embedded default bundle is trained on this data (``python -m vita_framework.train``) so that the tiny model
answers real questions about images instead of emitting noise, and the tests can check that the image actually
reaches the LLM (the answers cannot be guessed from the text alone).

A scene holds one to three shapes on a plain light background. Within a scene every shape has a different
kind, a different colour and a different place (one of five zones), so every question below has exactly one
correct answer:

* ``What shape is <colour>?`` -> ``circle``
* ``What colour is the <shape>?`` -> ``red``
* ``How many shapes are there?`` -> ``two``
* ``Where is the <colour> <shape>?`` -> ``left`` / ``right`` / ``top`` / ``bottom`` / ``center``
* ``Describe this image.`` -> ``a red circle and a blue square`` (shapes in the fixed order of ``SHAPES``)

Everything is a pure function of ``(DATA_VERSION, split, index)``: the same index always gives the same image,
question and answer, on any machine. Bump ``DATA_VERSION`` whenever the output of any function changes.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from typing import Any

DATA_VERSION = "shapes-v1"
IMAGE_SIZE = 224  # one InternViT tile of the trained bundle, so an image is never split into several tiles

SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 75, 215), "yellow": (235, 200, 20),
    "purple": (135, 55, 175),
}
# zone centres as fractions of the image side; zones are far enough apart that shapes never overlap
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "center": (0.5, 0.5),
}
NUMBERS = ("zero", "one", "two", "three")
MAX_SHAPES = 3
QUESTION_KINDS = ("shape", "colour", "count", "position", "describe")
DESCRIBE = "Describe this image."
COUNT = "How many shapes are there?"
# seeds of the two splits: disjoint streams of scenes
SPLIT_SEEDS = {"train": 1, "heldout": 2}

_SIZE_RANGE = (0.2, 0.27)   # shape diameter / image side
_JITTER = 0.01              # max centre offset from the zone centre / image side (no overlaps)
_COLOUR_JITTER = 18         # max per-channel offset from the nominal colour


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    position: str
    centre: tuple[float, float]  # fractions of the image side
    diameter: float              # fraction of the image side
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: tuple[int, int, int]

    def description(self) -> str:
        """The canonical answer to "Describe this image.": shapes in ``SHAPES`` order, joined in English."""
        parts = [f"a {s.colour} {s.kind}" for s in sorted(self.shapes, key=lambda s: SHAPES.index(s.kind))]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def render(self, size: int = IMAGE_SIZE) -> Any:
        """The scene as an RGB PIL image of ``size`` x ``size`` pixels."""
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (size, size), self.background)
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            if shape.kind == "circle":
                draw.ellipse(_box(shape, size), fill=shape.rgb)
            else:
                draw.polygon(_outline(shape, size), fill=shape.rgb)
        return image

    def region_labels(self, grid: int, size: int = IMAGE_SIZE,
                      min_cover: float = 0.1) -> list[tuple[int, int, int]]:
        """Per cell of a ``grid`` x ``grid`` split of the rendered image (row-major, top row first), the
        ``(kind, colour, position)`` of the shape covering most of the cell, as indices into ``SHAPES``,
        ``sorted(COLOURS)`` and ``sorted(POSITIONS)`` plus one, or ``(0, 0, 0)`` when no shape covers
        ``min_cover`` of it.

        Dense labels for warming up a vision tower before it learns from answers alone (``vita_framework.train``).
        """
        from PIL import Image, ImageDraw

        mask = Image.new("L", (size, size), 0)
        draw = ImageDraw.Draw(mask)
        for number, shape in enumerate(self.shapes, start=1):
            if shape.kind == "circle":
                draw.ellipse(_box(shape, size), fill=number)
            else:
                draw.polygon(_outline(shape, size), fill=number)
        import numpy as np

        ids = np.asarray(mask)
        edges = [i * size // grid for i in range(grid + 1)]
        colours, places = sorted(COLOURS), sorted(POSITIONS)
        labels = []
        for row in range(grid):
            for col in range(grid):
                cell = ids[edges[row]: edges[row + 1], edges[col]: edges[col + 1]]
                counts = np.bincount(cell.ravel(), minlength=len(self.shapes) + 1)
                best = int(counts[1:].argmax()) + 1 if len(counts) > 1 else 0
                if best and counts[best] >= min_cover * cell.size:
                    shape = self.shapes[best - 1]
                    labels.append((SHAPES.index(shape.kind) + 1, colours.index(shape.colour) + 1,
                                   places.index(shape.position) + 1))
                else:
                    labels.append((0, 0, 0))
        return labels


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


def _box(shape: Shape, size: int) -> tuple[float, float, float, float]:
    cx, cy = shape.centre[0] * size, shape.centre[1] * size
    r = shape.diameter * size / 2
    return (cx - r, cy - r, cx + r, cy + r)


def _outline(shape: Shape, size: int) -> list[tuple[float, float]]:
    cx, cy = shape.centre[0] * size, shape.centre[1] * size
    r = shape.diameter * size / 2
    if shape.kind == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape.kind == "triangle":  # pointing up, spanning the full diameter
        return [(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    points = []  # five-pointed star
    for i in range(10):
        radius = r if i % 2 == 0 else r * 0.45
        angle = -math.pi / 2 + i * math.pi / 5
        points.append((cx + radius * math.cos(angle), cy + radius * math.sin(angle)))
    return points


def _rng(split: str, index: int, salt: str = "") -> random.Random:
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split '{split}'; use one of {', '.join(SPLIT_SEEDS)}")
    return random.Random(f"{DATA_VERSION}/{SPLIT_SEEDS[split]}/{index}/{salt}")


def make_scene(rng: random.Random, n_shapes: int | None = None, max_shapes: int = MAX_SHAPES) -> Scene:
    """A random scene: 1 to ``max_shapes`` shapes of distinct kinds, colours and zones (``n_shapes`` fixes it)."""
    n = n_shapes if n_shapes is not None else rng.randint(1, max_shapes)
    kinds = rng.sample(SHAPES, n)
    colours = rng.sample(sorted(COLOURS), n)
    places = rng.sample(sorted(POSITIONS), n)
    shapes = []
    for kind, colour, place in zip(kinds, colours, places):
        zx, zy = POSITIONS[place]
        centre = (zx + rng.uniform(-_JITTER, _JITTER), zy + rng.uniform(-_JITTER, _JITTER))
        rgb = tuple(min(255, max(0, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in COLOURS[colour])
        shapes.append(Shape(kind, colour, place, centre, rng.uniform(*_SIZE_RANGE), rgb))
    grey = rng.randint(232, 255)
    background = (grey, grey, min(255, grey + rng.randint(-4, 4)))
    return Scene(tuple(shapes), background)


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
    scene = make_scene(rng, max_shapes=max_shapes)
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
    lines += ["a red circle and a blue square", "a red circle, a blue square and a green triangle"]
    return lines


def normalise(text: str) -> str:
    """How answers are compared: lower case, outer whitespace and final full stop dropped, spaces collapsed."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(".").strip()


def is_correct(prediction: str, answer: str) -> bool:
    return normalise(prediction) == normalise(answer)
