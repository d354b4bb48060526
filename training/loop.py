"""Training the tiny bundle on synthetic visual questions, through the generation pipeline's own components.

Nothing here re-implements the model: the pipeline is built with :func:`vita_framework.build` from a bundle on
disk, and a training step runs the same path generation runs -- ``vision.preprocess`` (tiling),
``vision.features`` (tower, x0.5, pixel shuffle), the projector, the prompt laid out, rendered and tokenised
by :mod:`vita_framework.prompt` exactly as ``pipeline.prepare`` does it (same ids), ``pipeline.fusion`` and the
LLM -- with gradients on.
The loss covers only the answer tokens and the closing ``<|im_end|>`` (which is what stops generation).

One exactness-preserving shortcut: every training sequence starts with the same system prompt, and the
several questions about one scene share its image tokens too, so those causal prefixes are computed once per
step and their key/value caches repeated over the rows (:meth:`Trainer.hidden`; checked against the plain
forward in :meth:`Trainer.check_shared_prefix`). Most of a row's tokens are prompt and image, so this is what
lets training fit in minutes on two CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vita_framework.prompt import PromptTokens, layout_user_text, system_prompt_key
from vita_framework.request import Request
from vita_training import synthetic
from vita_training.buckets import length_buckets, rows_of


@dataclass
class Batch:
    pixel_values: torch.Tensor  # [images, 3, S, S]
    ids: torch.Tensor           # [rows, width] right-padded; image placeholders expanded
    targets: torch.Tensor       # [rows, width] bool: position holds an answer token (or its <|im_end|>)
    image_of_row: list[int]     # which image each row asks about
    scenes: list[Any] | None = None  # the scene of each image (the key of the frozen-tower feature cache)
    audio: Any = None           # the spoken rows' fbank batch, in row order (vita_training.spoken)
    teacher: Any = None         # the same rows all typed, with which spoken rows are distilled (speech.distill)
    spoken: Any = None          # with ``teacher``: per row, whether it is asked aloud


class Trainer:
    """Holds a built pipeline and trains its modules on ``synthetic`` examples."""

    def __init__(self, pipeline: Any, *, train_vision: bool = True, train_projector: bool = True,
                 train_llm: bool = True) -> None:
        self.pipe = pipeline
        self.vision, self.projector, self.llm = pipeline.vision, pipeline.projector, pipeline.llm
        self.tokenizer = self.llm.tokenizer
        self.end_id = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.pad_id = self.tokenizer.pad_token_id or 0
        self.image_size = int(self.vision.image_size)
        self.tokens_per_tile = int(self.vision.tokens_per_tile)
        self.modality = pipeline.modalities.get("image")  # its stream, placeholder id, system prompt
        self.placeholder_ids = pipeline.placeholder_ids
        self._prompts: dict[str, list[int]] = {}
        self._answers: dict[str, list[int]] = {}
        self.modules = {"vision": self.vision.model, "projector": self.projector, "llm": self.llm.model}
        #: scene -> tower features, used while the tower is frozen (a stage cycling through a scene pool encodes
        #: each scene once); None: off
        self.feature_cache: dict[Any, torch.Tensor] | None = None
        self.trained: list[str] = []
        #: most buckets of rows by length in the question-and-answer segment (:meth:`hidden`); 1: one segment
        self.length_buckets = 1
        self.learn([name for name, on in zip(self.modules, (train_vision, train_projector, train_llm)) if on])
        self.prefix_len = self._common_prefix()
        # LLM positions one image takes (after the projector and the fusion): what the shared prefix repeats
        self.image_rows = self.prompt_ids(synthetic.DESCRIBE).count(self.placeholder_ids[self.modality.stream])

    def learn(self, kinds: list[str]) -> None:
        """Only ``kinds`` (of vision, projector, llm) get gradients from now on: a training stage's choice."""
        unknown = set(kinds) - set(self.modules)
        if unknown:
            raise ValueError(f"unknown modules {sorted(unknown)}; use {', '.join(self.modules)}")
        for name, module in self.modules.items():
            module.requires_grad_(name in kinds)
        self.trained = [name for name in self.modules if name in kinds]

    # -- text --------------------------------------------------------------------------------------
    def prompt_ids(self, question: str) -> list[int]:
        """The generation prompt for one single-tile image and ``question``, exactly as ``Pipeline.prepare``
        builds it: laid out, rendered with the system prompt the image selects, tokenised once, and the marker
        expanded to the rows the projector and the fusion leave of one tile."""
        if question not in self._prompts:
            table, image = self.pipe.modalities, self.modality
            user, _ = layout_user_text(question, {image.name: [1]}, table)
            text = self.pipe.template.render(user, system_prompt_key([image]), self.tokenizer)
            prompt = PromptTokens(self.tokenizer, text, table.stream_markers())
            rows = self.pipe.fusion.reduced_tokens(image.stream, [self.projector.tokens_out(self.tokens_per_tile)],
                                                   [0])
            self._prompts[question] = prompt.ids({image.stream: rows}, self.placeholder_ids)
        return self._prompts[question]

    def check_prompt(self, example: synthetic.Example) -> None:
        """Raise unless :meth:`prompt_ids` equals the ids ``pipeline.prepare`` gives (it encodes the image)."""
        prepared = self.pipe.prepare(Request(example.question, images=[example.image(self.image_size)])).input_ids
        if prepared != self.prompt_ids(example.question):
            raise RuntimeError(f"training tokenises {example.question!r} unlike generation: "
                               f"{self.prompt_ids(example.question)} vs {prepared}")

    def answer_ids(self, answer: str) -> list[int]:
        """The assistant's reply as generation produces it: the answer's tokens then ``<|im_end|>``."""
        if answer not in self._answers:
            self._answers[answer] = [*self.tokenizer(answer, add_special_tokens=False).input_ids, self.end_id]
        return self._answers[answer]

    def _common_prefix(self) -> int:
        ids = self.prompt_ids(synthetic.DESCRIBE)
        # the system prompt and the user header: the same in every row
        return ids.index(self.placeholder_ids[self.modality.stream])

    # -- batches ------------------------------------------------------------------------------------
    def batch(self, examples: list[list[synthetic.Example]]) -> Batch:
        """``examples[i]`` are questions about image i; every image must become exactly one tile."""
        vision_batch = self.vision.preprocess([group[0].image(self.image_size) for group in examples])
        if any(n != 1 for n in vision_batch.tiles_per_item):
            raise ValueError(f"training images must be one tile each; got {vision_batch.tiles_per_item}")
        prompts, audio = self.prompts(examples)
        ids, targets = self.layout(prompts, examples)
        image_of_row = [i for i, group in enumerate(examples) for _ in group]
        return Batch(vision_batch.pixel_values, ids, targets, image_of_row, [group[0].scene for group in examples],
                     audio)

    def layout(self, prompts: list[list[int]], examples: list[list[synthetic.Example]]) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
        """Each row's prompt then its answer, right-padded: (ids, which positions hold answer tokens)."""
        answers = [self.answer_ids(ex.answer) for group in examples for ex in group]
        rows = list(zip(prompts, answers))
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        targets = torch.zeros((len(rows), width), dtype=torch.bool)
        for r, (prompt, answer) in enumerate(rows):
            ids[r, : len(prompt) + len(answer)] = torch.tensor(prompt + answer)
            targets[r, len(prompt): len(prompt) + len(answer)] = True
        return ids, targets

    def prompts(self, examples: list[list[synthetic.Example]]) -> tuple[list[list[int]], Any]:
        """Each row's prompt ids, rows in order (grouped by image), and the spoken rows' audio batch (none here:
        :class:`vita_training.spoken.SpokenTrainer` asks some questions aloud)."""
        return [self.prompt_ids(ex.question) for group in examples for ex in group], None

    # -- forward ------------------------------------------------------------------------------------
    def embeds(self, batch: Batch, tiles: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Image features (``tiles``, from :meth:`image_tiles` when not given) spliced into the text by the
        pipeline's fusion (every stream but the image's is empty)."""
        stream = self.modality.stream
        tiles = self.image_tiles(batch) if tiles is None else tiles
        features = {s: [] for s in self.placeholder_ids}
        features[stream] = [tiles[i] for i in batch.image_of_row]
        if batch.audio is not None:  # spoken rows (vita_training.spoken.SpokenTrainer)
            features[self.audio_modality.stream] = self.audio_features(batch)
        mask = torch.ones_like(batch.ids)
        return self.pipe.fusion.fuse(batch.ids, mask, self.llm.embed, features, self.placeholder_ids).inputs_embeds

    def image_tiles(self, batch: Batch) -> list[torch.Tensor]:
        """Each image's features through tower and projector, reduced by the pipeline's fusion."""
        tiles = list(self.projector(self.tower_features(batch.pixel_values, batch.scenes)).unbind(0))
        return self.pipe.fusion.reduce(self.modality.stream, tiles, [0] * len(tiles))

    def tower_features(self, pixel_values: torch.Tensor, scenes: list[Any] | None = None) -> torch.Tensor:
        """The tower's features of these images (of ``scenes``); a frozen tower builds no graph, and with the
        feature cache on it encodes each scene once."""
        if "vision" in self.trained:
            return self.vision.features(pixel_values)
        cache = self.feature_cache
        with torch.no_grad():
            if cache is None or scenes is None:
                return self.vision.features(pixel_values)
            missing = [i for i, scene in enumerate(scenes) if scene not in cache]
            if missing:
                for i, row in zip(missing, self.vision.features(pixel_values[missing])):
                    cache[scenes[i]] = row
            return torch.stack([cache[scene] for scene in scenes])

    def hidden(self, embeds: torch.Tensor, image_of_row: list[int] | None = None,
               shared_prefix: bool = True, all_layers: bool = False,
               lengths: list[int] | None = None) -> tuple[Any, int]:
        """Last hidden states from position ``offset`` on (``all_layers``: every layer's, last one last);
        returns (states, offset).

        With ``shared_prefix`` the forward runs in three causal segments, each computed once and its
        key/value cache repeated: the system prompt (the same in every row), each image's tokens (the same in
        every row asking about that image; rows are grouped by image) and then every row's question and
        answer. Mathematically the plain causal forward (rows are right-padded, so causal masking alone keeps
        padding out of every real position); far cheaper when several questions share one image.
        ``lengths`` (each row's tokens before its padding) lets the last segment run in buckets of rows of
        similar length (:func:`vita_training.buckets.length_buckets`), each only as wide as its longest row: a
        one-word answer's row no longer pays for a description's width. States past a row's length are then zero.
        """
        base = self.llm.model.model
        def states(out: Any) -> Any:
            return out.hidden_states if all_layers else out.last_hidden_state

        if not shared_prefix or image_of_row is None:
            return states(base(inputs_embeds=embeds, use_cache=False, output_hidden_states=all_layers)), 0
        p, t = self.prefix_len, self.image_rows
        rows, width = embeds.shape[:2]
        first = [r for r in range(rows) if r == 0 or image_of_row[r] != image_of_row[r - 1]]
        if len(first) != len(set(image_of_row)):
            raise ValueError("rows must be grouped by image")
        repeats = torch.tensor([b - a for a, b in zip(first, [*first[1:], rows])], device=embeds.device)
        cache = base(inputs_embeds=embeds[:1, :p], use_cache=True).cache
        _repeat_rows(cache, torch.tensor([len(first)], device=embeds.device))
        positions = torch.arange(p, p + t, device=embeds.device).expand(len(first), -1)
        base(inputs_embeds=embeds[first, p: p + t], cache=cache, position_ids=positions, use_cache=True)
        offset = p + t
        if lengths is None:
            _repeat_rows(cache, repeats)
            positions = torch.arange(offset, width, device=embeds.device).expand(rows, -1)
            out = base(inputs_embeds=embeds[:, offset:], cache=cache, position_ids=positions, use_cache=True,
                       output_hidden_states=all_layers)
            return states(out), offset
        buckets = length_buckets([n - offset for n in lengths], most=self.length_buckets)
        image_index = torch.repeat_interleave(torch.arange(len(first), device=embeds.device), repeats)
        parts = []
        for bucket in buckets:
            span = max(lengths[r] for r in bucket) - offset
            index = torch.tensor(bucket, device=embeds.device)
            positions = torch.arange(offset, offset + span, device=embeds.device).expand(len(bucket), -1)
            out = base(inputs_embeds=embeds[index, offset: offset + span], cache=rows_of(cache, image_index[index]),
                       position_ids=positions, use_cache=True, output_hidden_states=all_layers)
            parts.append((index, span, states(out)))

        def assemble(pick: Any) -> torch.Tensor:  # each bucket's states back in row order, zero-padded
            full = None
            for index, span, got in parts:
                got = pick(got)
                if full is None:
                    full = got.new_zeros(rows, width - offset, got.shape[-1])
                full = full.index_copy(0, index, torch.nn.functional.pad(got, (0, 0, 0, width - offset - span)))
            return full

        if all_layers:
            return tuple(assemble(lambda got, i=i: got[i]) for i in range(len(parts[0][2]))), offset
        return assemble(lambda got: got), offset

    def lengths(self, batch: Batch) -> list[int] | None:
        """Each row's tokens before its right padding (its last answer token, the last target, ends it), which
        :meth:`hidden` buckets rows by; None with ``length_buckets`` 1 (one segment, as bundles trained before
        buckets existed were)."""
        if self.length_buckets <= 1:
            return None
        width = batch.targets.shape[1]
        return (width - batch.targets.flip(1).int().argmax(1)).tolist()

    def loss(self, batch: Batch, shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean cross-entropy over answer tokens, and per row whether every answer token is the argmax."""
        hidden, offset = self.hidden(self.embeds(batch), batch.image_of_row, shared_prefix,
                                     lengths=self.lengths(batch))
        return self.answer_loss(hidden, offset, batch)

    @staticmethod
    def predicting(batch: Batch, offset: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, columns) of the positions that predict an answer token, row by row in order, and the mask."""
        predicts = batch.targets[:, 1:].clone()  # position t predicts token t+1
        predicts[:, :offset] = False
        rows, cols = predicts.nonzero(as_tuple=True)
        return rows, cols, predicts

    def answer_loss(self, hidden: torch.Tensor, offset: int, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer-token cross-entropy of last hidden states ``hidden`` (from position ``offset`` on)."""
        rows, cols, predicts = self.predicting(batch, offset)
        logits = self.llm.model.lm_head(hidden[rows, cols - offset])
        labels = batch.ids[rows, cols + 1]
        per_token = torch.nn.functional.cross_entropy(logits.float(), labels, reduction="none")
        # every question weighs the same: a long description must not drown the one-word answers
        tokens_in_row = predicts.sum(dim=1).clamp(min=1)
        loss = (per_token / tokens_in_row[rows]).sum() / predicts.any(dim=1).sum().clamp(min=1)
        wrong = torch.zeros(batch.ids.shape[0], dtype=torch.bool)
        wrong.index_put_((rows,), logits.argmax(-1) != labels, accumulate=True)
        return loss, ~wrong

    def check_shared_prefix(self, batch: Batch, atol: float = 1e-4) -> float:
        """Max |difference| of answer-position states between the shared-prefix and the plain forward."""
        with torch.no_grad():
            embeds = self.embeds(batch)
            plain, _ = self.hidden(embeds, shared_prefix=False)
            shared, offset = self.hidden(embeds, batch.image_of_row, shared_prefix=True, lengths=self.lengths(batch))
            diff = (plain[:, offset:] - shared)[batch.targets[:, offset:]].abs().max().item()
        if diff > atol:
            raise RuntimeError(f"the shared-prefix forward differs from the plain forward by {diff:.2e}")
        return diff

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.modules.values() for p in m.parameters() if p.requires_grad]

    def set_mode(self, training: bool) -> None:
        """Training mode for the modules being trained; frozen ones stay in eval mode."""
        for name, module in self.modules.items():
            module.train(training and name in self.trained)


def _repeat_rows(cache: Any, repeats: torch.Tensor) -> None:
    """Repeat each batch row of a transformers ``DynamicCache`` ``repeats[i]`` times (differentiably)."""
    def grow(t: torch.Tensor) -> torch.Tensor:  # one source row: a view instead of a copy
        if repeats.numel() == 1:
            return t.expand(int(repeats[0]), *t.shape[1:])
        return t.repeat_interleave(repeats, dim=0)

    for layer in cache.layers:
        layer.keys, layer.values = grow(layer.keys), grow(layer.values)
