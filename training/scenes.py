"""Scenes of simple shapes, drawn as a user's own picture varies: the images of :mod:`vita_training.synthetic`.

A scene holds one to four shapes of distinct kinds, colours and places (one of five zones, anywhere inside it;
:func:`position_of` is the rule), so every question about it has one answer. Size (small to filling the frame
when alone), rotation, filled or outlined, background tint, pixel noise, JPEG compression and the canvas aspect
ratio vary by a :class:`Style`; the held-out style uses settings the training style never does. ``Scene.render``
draws what a user would hand the model, ``Scene.region_labels`` what the tower warm-up learns per image token.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from vita_framework.media.image import pad_to_square

IMAGE_SIZE = 224  # scenes' default render size (held-out sets, the sample); training renders at the tower's tile
                  # size (arch.image_size) and a bundle resizes any image to one tile
SHAPES = ("circle", "square", "triangle", "star")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35), "green": (35, 160, 55), "blue": (40, 75, 215), "yellow": (235, 200, 20),
    "purple": (135, 55, 175),
}
# zone centres as fractions of the image width and height (the nominal place of each answer)
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.2, 0.5), "right": (0.8, 0.5), "top": (0.5, 0.2), "bottom": (0.5, 0.8), "center": (0.5, 0.5),
}
MAX_SHAPES = 4
UNSEEN = -100     # region label of a kind no edge in the cell shows (cross-entropy's ignore_index)
INTERIOR = 0.97   # a cell this covered by one shape is inside it

@dataclass(frozen=True)
class Style:
    """How a split renders scenes. The held-out split uses settings training never sees (``HELDOUT_STYLE``):
    canvas aspect ratios from the bands between training's (training spans 1:2 to 2:1, so every held-out ratio
    lies between two trained ones), stronger JPEG compression, and background hues from a band training leaves
    out; and a share of scenes (one in six held out) is a user's first try: one large filled shape, centred, on
    white."""

    aspects: tuple[tuple[float, float], ...]   # ranges of width / height
    square_share: float                        # fraction of square canvases
    jpeg: tuple[int, int] | None               # quality range; None: no compression
    jpeg_share: float
    noise: tuple[float, float]                 # Gaussian pixel noise sigma range (0-255 scale)
    background_hues: tuple[tuple[float, float], ...]   # hue ranges (0-1) of tinted backgrounds
    user_share: float                          # one large filled centred shape on white


# canvas ratios alternate between the splits (nearly log-symmetric: a band's reciprocal is about a band of the same
# split, so tall and wide canvases are held out alike)
TRAIN_ASPECTS = ((0.5, 0.56), (0.63, 0.71), (0.8, 1.25), (1.4, 1.6), (1.78, 2.0))
HELDOUT_ASPECTS = ((0.56, 0.63), (0.71, 0.8), (1.25, 1.4), (1.6, 1.78))
TRAIN_STYLE = Style(aspects=TRAIN_ASPECTS, square_share=0.35, jpeg=(45, 95), jpeg_share=0.5, noise=(0.0, 7.0),
                    background_hues=((0.0, 0.45), (0.55, 1.0)), user_share=0.05)
HELDOUT_STYLE = Style(aspects=HELDOUT_ASPECTS, square_share=0.25, jpeg=(25, 40), jpeg_share=0.5,
                      noise=(0.0, 7.0), background_hues=((0.46, 0.54),), user_share=1 / 6)
STYLES = {"train": TRAIN_STYLE, "heldout": HELDOUT_STYLE}


@dataclass(frozen=True)
class Shape:
    kind: str
    colour: str
    position: str
    centre: tuple[float, float]  # fractions of the image width and height
    diameter: float              # fraction of the image's shorter side
    rgb: tuple[int, int, int]
    angle: float = 0.0           # rotation in radians (circles ignore it)
    outline: float = 0.0         # 0: filled; else the stroke width as a fraction of the diameter


@dataclass(frozen=True)
class Scene:
    shapes: tuple[Shape, ...]
    background: tuple[int, int, int]
    aspect: float = 1.0          # canvas width / height
    noise: float = 0.0           # Gaussian pixel noise sigma
    noise_seed: int = 0
    jpeg: int | None = None      # JPEG quality the image went through, None: none

    def description(self) -> str:
        """The canonical answer to "Describe this image.": shapes in ``SHAPES`` order, joined in English."""
        parts = [f"a {s.colour} {s.kind}" for s in sorted(self.shapes, key=lambda s: SHAPES.index(s.kind))]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def canvas(self, size: int = IMAGE_SIZE) -> tuple[int, int]:
        """(width, height) in pixels: ``size`` squared in area, at the scene's aspect ratio."""
        root = math.sqrt(self.aspect)
        return max(16, round(size * root)), max(16, round(size / root))

    def render(self, size: int = IMAGE_SIZE) -> Any:
        """The scene as an RGB PIL image of about ``size`` x ``size`` pixels in area (``canvas``), with its noise
        and JPEG compression applied -- what a user would hand the model."""
        import io

        import numpy as np
        from PIL import Image, ImageDraw

        width, height = self.canvas(size)
        image = Image.new("RGB", (width, height), self.background)
        draw = ImageDraw.Draw(image)
        for shape in self.shapes:
            _draw(draw, shape, width, height, shape.rgb)
        if self.noise > 0:
            rng = np.random.default_rng(self.noise_seed)
            pixels = np.asarray(image, dtype=np.float32) + rng.normal(0.0, self.noise, (height, width, 3))
            image = Image.fromarray(np.clip(pixels.round(), 0, 255).astype(np.uint8))
        if self.jpeg is not None:
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=self.jpeg)
            image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
        return image

    def region_labels(self, grid: int, size: int = IMAGE_SIZE, min_cover: float = 0.1,
                      interior_kind: bool = False, padded: bool = False) -> list[tuple[int, int, int]]:
        """Per cell of a ``grid`` x ``grid`` split of the image as one tile sees it (the canvas resized to a
        square, or with ``padded`` centred on a square first, as a tower with ``pad_to_square`` takes it; padding
        is background; row-major, top row first), the ``(kind, colour, position)`` of the shape covering most of the
        cell, as indices into ``SHAPES``, ``sorted(COLOURS)`` and ``sorted(POSITIONS)`` plus one, or
        ``(0, 0, 0)`` when no shape covers ``min_cover`` of it. A cell inside a shape (``INTERIOR`` of it
        covered) shows no edge, so its kind is ``UNSEEN`` (-100: no loss) rather than a label it cannot read --
        unless ``interior_kind``: then every covered cell carries its shape's kind, which the tower must gather
        from the shape's edges (attention spans the tile), so that the LLM can find a shape's tokens by kind as
        it finds them by colour.

        Dense labels for warming up a vision tower before it learns from answers alone (``vita_framework.train``).
        """
        import numpy as np
        from PIL import Image, ImageDraw

        width, height = self.canvas(size)
        mask = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(mask)
        for number, shape in enumerate(self.shapes, start=1):
            _draw(draw, shape, width, height, number, filled=True)
        if padded:  # the geometry a padding tower gives its pixels
            mask = pad_to_square(mask, 0)
        ids = np.asarray(mask.resize((size, size), Image.NEAREST))
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
                    # no edge in view: the kind cannot be seen (unless the tower is to gather it from the edges)
                    inside = not interior_kind and counts[best] >= INTERIOR * cell.size
                    labels.append((UNSEEN if inside else SHAPES.index(shape.kind) + 1,
                                   colours.index(shape.colour) + 1, places.index(shape.position) + 1))
                else:
                    labels.append((0, 0, 0))
        return labels


def position_of(centre: tuple[float, float]) -> str:
    """The answer to "Where is ...?" for a shape centred at ``centre`` (fractions of width and height): ``center``
    within 0.1 of the middle on both axes, else the side of the axis it is further out on. Scenes are drawn
    away from these boundaries (``_place``), so every answer is unambiguous."""
    dx, dy = centre[0] - 0.5, centre[1] - 0.5
    if max(abs(dx), abs(dy)) <= 0.1:
        return "center"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def _points(shape: Shape, width: int, height: int) -> list[tuple[float, float]]:
    cx, cy = shape.centre[0] * width, shape.centre[1] * height
    r = shape.diameter * min(width, height) / 2
    if shape.kind == "square":
        corners = [(-r, -r), (r, -r), (r, r), (-r, r)]
    elif shape.kind == "triangle":  # pointing up before rotation, spanning the full diameter
        corners = [(0.0, -r), (r, r), (-r, r)]
    else:  # five-pointed star
        corners = [((r if i % 2 == 0 else r * 0.45) * math.cos(-math.pi / 2 + i * math.pi / 5),
                    (r if i % 2 == 0 else r * 0.45) * math.sin(-math.pi / 2 + i * math.pi / 5)) for i in range(10)]
    cos, sin = math.cos(shape.angle), math.sin(shape.angle)
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in corners]


def _draw(draw: Any, shape: Shape, width: int, height: int, fill: Any, filled: bool = False) -> None:
    """Draw ``shape`` on a ``width`` x ``height`` canvas (outlined shapes as a stroke unless ``filled``)."""
    r = shape.diameter * min(width, height) / 2
    stroke = max(2, round(shape.outline * 2 * r)) if shape.outline and not filled else 0
    if shape.kind == "circle":
        cx, cy = shape.centre[0] * width, shape.centre[1] * height
        box = (cx - r, cy - r, cx + r, cy + r)
        draw.ellipse(box, outline=fill, width=stroke) if stroke else draw.ellipse(box, fill=fill)
    else:
        points = _points(shape, width, height)
        draw.polygon(points, outline=fill, width=stroke) if stroke else draw.polygon(points, fill=fill)


def _zone_point(rng: random.Random, place: str) -> tuple[float, float]:
    """A centre anywhere in ``place``'s zone, at least 0.08 from every boundary of :func:`position_of`."""
    if place == "center":
        return 0.5 + rng.uniform(-0.08, 0.08), 0.5 + rng.uniform(-0.08, 0.08)
    major = rng.uniform(0.18, 0.42)               # distance from the middle along the zone's axis
    minor = rng.uniform(-0.55, 0.55) * major      # across it: well inside the diagonal boundary
    sign = -1.0 if place in ("left", "top") else 1.0
    if place in ("left", "right"):
        return 0.5 + sign * major, 0.5 + minor
    return 0.5 + minor, 0.5 + sign * major


def _place(rng: random.Random, places: list[str], diameters: list[float], width: int,
           height: int) -> tuple[list[tuple[float, float]], list[float]] | None:
    """Centres for shapes of ``diameters`` in ``places``, inside the canvas and apart (None: no fit found)."""
    side = min(width, height)
    for _ in range(60):
        centres = [_zone_point(rng, place) for place in places]
        radii = [d * side / 2 for d in diameters]
        inside = all(r + 2 <= cx * width <= width - r - 2 and r + 2 <= cy * height <= height - r - 2
                     for (cx, cy), r in zip(centres, radii))
        apart = all(math.dist((a[0] * width, a[1] * height), (b[0] * width, b[1] * height)) > ra + rb + 4
                    for i, (a, ra) in enumerate(zip(centres, radii)) for b, rb in zip(centres[i + 1:], radii[i + 1:]))
        if inside and apart:
            return centres, diameters
    return None


def _background(rng: random.Random, style: Style) -> tuple[int, int, int]:
    import colorsys

    if rng.random() < 0.3:
        grey = rng.randint(225, 255)
        return grey, grey, grey
    low, high = rng.choice(style.background_hues)
    rgb = colorsys.hsv_to_rgb(rng.uniform(low, high), rng.uniform(0.05, 0.25), rng.uniform(0.88, 1.0))
    return tuple(round(c * 255) for c in rgb)


def make_scene(rng: random.Random, n_shapes: int | None = None, max_shapes: int = MAX_SHAPES,
               style: Style = TRAIN_STYLE) -> Scene:
    """A random scene in ``style``: 1 to ``max_shapes`` shapes of distinct kinds, colours and zones (``n_shapes``
    fixes it), any size that fits (up to filling the frame when alone), anywhere in their zones, rotated, filled
    or outlined, on a tinted background, with pixel noise and JPEG compression."""
    user = n_shapes in (None, 1) and rng.random() < style.user_share
    n = 1 if user else n_shapes if n_shapes is not None else rng.randint(1, max_shapes)
    kinds = rng.sample(SHAPES, n)
    colours = rng.sample(sorted(COLOURS), n)
    if user:  # a user's first try: one big filled shape, centred, on white
        rgb = COLOURS[colours[0]]
        centre = (0.5 + rng.uniform(-0.03, 0.03), 0.5 + rng.uniform(-0.03, 0.03))
        shape = Shape(kinds[0], colours[0], "center", centre, rng.uniform(0.45, 0.9), rgb)
        return Scene((shape,), (255, 255, 255))
    if rng.random() < style.square_share:
        aspect = 1.0
    else:
        low, high = rng.choice(style.aspects)
        aspect = math.exp(rng.uniform(math.log(low), math.log(high)))
    width, height = Scene((), (0, 0, 0), aspect).canvas()
    placed = None
    while placed is None:
        places = rng.sample(sorted(POSITIONS), n)
        if n == 1:
            top = 0.95 if places[0] == "center" else 0.5
            diameters = [math.exp(rng.uniform(math.log(0.15), math.log(top)))]
        else:
            diameters = [rng.uniform(0.14, 0.3 if n < 4 else 0.26) for _ in range(n)]
        for _ in range(6):
            placed = _place(rng, places, diameters, width, height)
            if placed is not None:
                break
            diameters = [d * 0.85 for d in diameters]
    shapes = []
    for kind, colour, place, centre, diameter in zip(kinds, colours, places, *placed):
        rgb = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in COLOURS[colour])
        angle = 0.0 if kind == "circle" else rng.uniform(0, 2 * math.pi)
        outline = rng.uniform(0.06, 0.15) if rng.random() < 0.3 else 0.0
        shapes.append(Shape(kind, colour, place, centre, diameter, rgb, angle, outline))
    noise = rng.uniform(*style.noise) if rng.random() < 0.5 else 0.0
    jpeg = rng.randint(*style.jpeg) if style.jpeg and rng.random() < style.jpeg_share else None
    return Scene(tuple(shapes), _background(rng, style), aspect, round(noise, 2), rng.randrange(2**31), jpeg)
