"""Stage one of training: warm the vision tower and projector up on dense region labels.

Why: learning to see only from answer tokens is slow at this size -- the answer gradient reaches the tower
through a randomly initialised LLM, and one answer word says little about 49 image tokens. A per-token label
(the kind, colour and position of the shape covering that token's region;
:meth:`vita_training.synthetic.Scene.region_labels`) gives every image token its own signal, so the tower
learns shapes and colours in a few minutes. Three small linear heads read the projector's output (the very
tokens the LLM receives) and are thrown away afterwards; stage two (:func:`vita_training.fitting.fit`)
then trains everything on answer tokens only.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

from vita_training import synthetic
from vita_training.prefetch import batches
from vita_training.progress import progress

# scenes of this stage come from their own range of the train split, apart from stage two's
FIRST_SCENE = 10_000_000


class RegionHeads(nn.Module):
    """Per image token: logits over (no shape, *SHAPES), (no shape, *sorted(COLOURS)), (no shape,
    *sorted(POSITIONS)); the last makes each token carry where its shape is, not only where the token is."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(width, len(values) + 1)
                                   for values in (synthetic.SHAPES, synthetic.COLOURS, synthetic.POSITIONS))
        self.objects = nn.Linear(width, len(synthetic.SHAPES))  # a shape's kind from the mean of its tokens

    def forward(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return [head(tokens) for head in self.heads]


def object_kinds(heads: RegionHeads, tokens: torch.Tensor, labels: torch.Tensor,
                 scenes: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, targets) of each shape's kind read from the mean of the tokens it covers (found by its colour,
    unique in a scene). Why: a shape's kind shows in its outline as a whole, which a single token of a large
    shape cannot see; the LLM reads all of a shape's tokens, so their pooled features are what must tell it."""
    colours = sorted(synthetic.COLOURS)
    pooled, targets = [], []
    for b, scene in enumerate(scenes):
        for shape in scene.shapes:
            covered = labels[b, :, 1] == colours.index(shape.colour) + 1
            if covered.any():
                pooled.append(tokens[b][covered].mean(0))
                targets.append(synthetic.SHAPES.index(shape.kind))
    return heads.objects(torch.stack(pooled)), torch.tensor(targets, device=tokens.device)


def replay_initial_rng(trainer, seed: int) -> None:
    """Put the global RNG where the region heads have always been drawn from: seeded with ``seed``, then
    advanced by the default init of an mlp2x_gelu projector (vision width -> LLM width -> LLM width), which the
    builder used to draw before loading the projector's weights. It no longer does; replaying the draws keeps
    a training config reproducing its bundle (the shipped one included) byte for byte."""
    torch.manual_seed(seed)
    width_in, width_out = int(trainer.vision.hidden_size), int(trainer.llm.hidden_size)
    nn.Linear(width_in, width_out)
    nn.Linear(width_out, width_out)


def region_batch(trainer, first: int, count: int, pool: int = 0,
                 interior_kind: bool = False) -> tuple[torch.Tensor, torch.Tensor, list]:
    """Pixel values of scenes ``first .. first+count-1``, their labels ``[count, tokens, 3]`` and the scenes.
    With ``pool`` the scenes are the answer stages' pool (train scenes ``0 .. pool-1``, cycled), so a frozen
    tower's cached features serve every stage."""
    grid = math.isqrt(trainer.tokens_per_tile)
    if grid * grid != trainer.tokens_per_tile:
        raise ValueError(f"region labels need a square token grid; the tower gives {trainer.tokens_per_tile} tokens")
    indices = [(first + i) % pool if pool else FIRST_SCENE + first + i for i in range(count)]
    scenes = [synthetic.scene_examples("train", index, 1)[0].scene for index in indices]
    pixels = trainer.vision.preprocess([s.render(trainer.image_size) for s in scenes]).pixel_values
    padded = bool(getattr(trainer.vision, "pad_to_square", False))  # label the tile the tower sees
    labels = torch.tensor([s.region_labels(grid, trainer.image_size, interior_kind=interior_kind, padded=padded)
                           for s in scenes], dtype=torch.long)
    return pixels, labels, scenes


def warm_up_vision(trainer, *, steps: int, images_per_step: int, lr: float, weight_decay: float = 0.01,
                   grad_clip: float = 1.0, log_every: int = 50, log: Callable[[str], None] = print,
                   scene_pool: int = 0, interior_kind: bool = False, workers: int = 0) -> list[dict[str, float]]:
    """Train the tower and projector (when the trainer trains them) to label every image token's region
    (``scene_pool``: cycle through the answer stages' pool of scenes, see :func:`region_batch`;
    ``interior_kind``: tokens inside a shape learn its kind too, see ``Scene.region_labels``; ``workers``:
    processes rendering the scenes ahead, :mod:`vita_training.prefetch`)."""
    modules = [trainer.modules[name] for name in ("vision", "projector") if name in trainer.trained]
    if steps <= 0 or not modules:
        return []
    width = trainer.llm.model.config.hidden_size
    param = next(trainer.projector.parameters())
    heads = RegionHeads(width).to(device=param.device, dtype=param.dtype)
    params = [p for m in modules for p in m.parameters()] + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    for module in modules:
        module.train(True)
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    running_loss, hits, shapes_seen = 0.0, 0, 0
    head_hits = torch.zeros(3)  # tokens on a shape whose kind, colour, position label is right
    object_hits, objects_seen = 0, 0  # shapes whose kind the pooled tokens tell

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor, list]:
        return region_batch(trainer, step * images_per_step, images_per_step, scene_pool, interior_kind)

    made = batches(make, steps, workers)
    for step in progress(range(steps), desc="vision warm-up"):
        for group in optimizer.param_groups:  # cosine decay to 5 % over the stage
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        pixels, labels, scenes = next(made)
        labels = labels.to(param.device)
        if scene_pool and trainer.feature_cache is None:
            trainer.feature_cache = {}
        tokens = trainer.projector(trainer.tower_features(pixels, scenes if scene_pool else None))
        logits = heads(tokens)
        loss = sum(nn.functional.cross_entropy(part.flatten(0, 1), labels[..., i].flatten())
                   for i, part in enumerate(logits))
        kinds, kind_targets = object_kinds(heads, tokens, labels, scenes)
        loss = loss + nn.functional.cross_entropy(kinds, kind_targets)
        object_hits += int((kinds.argmax(-1) == kind_targets).sum())
        objects_seen += len(kind_targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        running_loss += loss.item()
        on_edge = labels[..., 0] > 0  # a shape's edge in view: all three labels are readable
        each = torch.stack([part.argmax(-1) == labels[..., i] for i, part in enumerate(logits)])  # [3, B, T]
        hits += int(each.all(0)[on_edge].sum())
        head_hits += each[:, on_edge].sum(1)
        shapes_seen += int(on_edge.sum())
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            kind, colour, place = (head_hits / max(1, shapes_seen)).tolist()
            record = {"stage": "vision", "step": step + 1, "loss": running_loss / n,
                      "shape_token_acc": hits / max(1, shapes_seen), "kind_acc": kind, "colour_acc": colour,
                      "position_acc": place, "object_kind_acc": object_hits / max(1, objects_seen),
                      "elapsed_s": time.perf_counter() - t0}
            history.append(record)
            log("vision step {step:>5}  loss {loss:.4f}  shape-token acc {shape_token_acc:.3f} (kind {kind_acc:.3f}, "
                "colour {colour_acc:.3f}, position {position_acc:.3f})  shape kind acc {object_kind_acc:.3f}  "
                "{elapsed_s:.0f}s".format(**record))
            running_loss, hits, shapes_seen = 0.0, 0, 0
            head_hits = torch.zeros(3)
            object_hits, objects_seen = 0, 0
    return history
