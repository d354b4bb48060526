"""Spoken questions: the whale audio encoder learns to make a spoken question mean what the typed one means.

Why this way: the typed model already answers questions about a scene, so the speech stage asks the same
questions aloud (``espeak-ng``, :mod:`vita_training.speech`) and trains on the same answer tokens. A row is
spoken or typed at random (``speech.spoken_share``), so while the LLM adapts to audio tokens it keeps answering
typed questions. A spoken row is laid out exactly as generation lays out ``prompt="" images=[...]
audios=[question.wav]`` (the image, ``\\n``, then the audio's tokens), its tokens counted by the encoder's own
``planned_tokens``; training runs the encoder's differentiable forward, generation the same forward without
gradients.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import torch

from vita_framework.errors import ConfigError
from vita_framework.prompt import PromptTokens, layout_user_text, system_prompt_key
from vita_training import speech, synthetic

from .loop import Batch, Trainer
from .specmask import FeatureMasks

#: utterances whose fbank frames estimate the CMVN statistics of a fresh encoder
CMVN_UTTERANCES = 400


#: the whale component's encoder body (its adapter, ``adpter.*`` as VITA spells it, maps the body to the LLM)
ENCODER_BODY = "encoder."


def freeze_encoder_body(audio: Any) -> int:
    """Stop gradients to the whale's encoder body (``speech.learn_encoder: false``), so the speech stage trains
    its adapter (and the LLM) and the body keeps the speech warm-up's weights, which told questions apart in an
    unseen accent better than the body the speech stage leaves (a probe, README); in a full run it answered worse
    (README). Returns how many tensors it froze."""
    body = [p for name, p in audio.named_parameters() if name.startswith(ENCODER_BODY)]
    if not body:
        raise ConfigError(f"speech.learn_encoder=false: the audio encoder has no '{ENCODER_BODY}*' parameters to "
                          "keep (the whale's body); set speech.learn_encoder=true")
    for param in body:
        param.requires_grad_(False)
    return len(body)


class SpokenTrainer(Trainer):
    """A :class:`Trainer` whose batches ask a share of their questions aloud (``spoken_share``, 0: none)."""

    def __init__(self, pipeline: Any, bank: speech.SpeechBank, **learn: bool) -> None:
        super().__init__(pipeline, **learn)
        self.audio = pipeline.audio
        self.audio_modality = pipeline.modalities.get("audio")
        self.modules["audio"] = self.audio
        self.audio.requires_grad_(False)
        self.bank = bank
        self.spoken_share = 0.0
        self.perturb: speech.Perturbation | None = None  # varies training clips (speech.augment)
        self.masks: FeatureMasks | None = None  # masks training clips' features (speech.specaugment)
        self.distill = 0.0  # weight of matching each spoken row's states to its typed twin's (speech.distill)
        self._spoken_prompts: dict[int, list[int]] = {}

    def spoken_prompt_ids(self, audio_tokens: int) -> list[int]:
        """The generation prompt for one single-tile image and one spoken question of ``audio_tokens`` tokens."""
        if audio_tokens not in self._spoken_prompts:
            table, image, audio = self.pipe.modalities, self.modality, self.audio_modality
            user, _ = layout_user_text("", {image.name: [1], audio.name: [1]}, table)
            text = self.pipe.template.render(user, system_prompt_key([image, audio]), self.tokenizer)
            prompt = PromptTokens(self.tokenizer, text, table.stream_markers())
            rows = self.pipe.fusion.reduced_tokens(image.stream, [self.projector.tokens_out(self.tokens_per_tile)],
                                                   [0])
            counts = {image.stream: rows, audio.stream: [audio_tokens]}
            self._spoken_prompts[audio_tokens] = prompt.ids(counts, self.placeholder_ids)
        return self._spoken_prompts[audio_tokens]

    def check_spoken_prompt(self, example: synthetic.Example) -> None:
        """Raise unless a spoken row's ids equal what ``pipeline.prepare`` gives for the same image and clip."""
        from vita_framework.request import Request

        clip = self.bank.waveform(example.question, self.voice(example, 0))
        request = Request("", images=[example.image(self.image_size)], audios=[(clip, speech.SAMPLE_RATE)])
        prepared = self.pipe.prepare(request).input_ids
        tokens = self.audio.planned_tokens(self.audio.preprocess([torch.from_numpy(clip)], speech.SAMPLE_RATE))[0]
        if prepared != self.spoken_prompt_ids(tokens):
            raise RuntimeError(f"training lays out a spoken question unlike generation: "
                               f"{self.spoken_prompt_ids(tokens)} vs {prepared}")

    def voice(self, example: synthetic.Example, row: int) -> speech.Voice:
        """Held-out questions in the held-out voice; training questions in a training voice by scene and row."""
        if example.split == "heldout":
            return speech.HELDOUT_VOICE
        return speech.train_voice(example.index * 64 + row)

    @staticmethod
    def row_key(example: synthetic.Example, row: int) -> str | None:
        """What seeds a training row's ``perturb`` and ``masks`` draws (scene, row and question, so a run stays a
        pure function of its config); None for a held-out row, which is never varied."""
        return None if example.split == "heldout" else f"row/{example.index}/{row}/{example.question}"

    def clip(self, example: synthetic.Example, row: int) -> Any:
        """The waveform a row asks its question with: held-out rows as spoken, training rows varied by
        ``perturb``."""
        audio = self.bank.waveform(example.question, self.voice(example, row))
        key = self.row_key(example, row)
        if self.perturb is None or key is None:
            return audio
        return self.perturb.apply(audio, key)

    def is_spoken(self, example: synthetic.Example, row: int) -> bool:
        if self.spoken_share <= 0:
            return False
        return random.Random(f"spoken/{example.split}/{example.index}/{row}/{example.question}").random() \
            < self.spoken_share

    def prompts(self, examples: list[list[synthetic.Example]]) -> tuple[list[list[int]], Any]:
        """As :meth:`Trainer.prompts`, with the spoken rows laid out around their audio tokens."""
        rows = [(ex, j) for group in examples for j, ex in enumerate(group)]
        spoken = [self.is_spoken(ex, j) for ex, j in rows]
        if not any(spoken):
            return super().prompts(examples)
        clips = [self.clip(ex, j) for (ex, j), aloud in zip(rows, spoken) if aloud]
        audio = self.audio.preprocess([torch.from_numpy(c) for c in clips], speech.SAMPLE_RATE)
        audio = self.masked(audio, [self.row_key(ex, j) for (ex, j), aloud in zip(rows, spoken) if aloud])
        tokens = iter(self.audio.planned_tokens(audio))
        return [self.spoken_prompt_ids(next(tokens)) if aloud else self.prompt_ids(ex.question)
                for (ex, _), aloud in zip(rows, spoken)], audio

    def batch(self, examples: list[list[synthetic.Example]]) -> Batch:
        """As :meth:`Trainer.batch`; with ``distill`` and spoken rows, it carries the same rows typed as well."""
        batch = super().batch(examples)
        if self.distill <= 0 or batch.audio is None:
            return batch
        ids, targets = self.layout(Trainer.prompts(self, examples)[0], examples)
        aloud = [self.is_spoken(ex, j) for group in examples for j, ex in enumerate(group)]
        return dataclasses.replace(batch, teacher=dataclasses.replace(batch, ids=ids, targets=targets, audio=None),
                                   spoken=torch.tensor(aloud))

    def loss(self, batch: Batch, shared_prefix: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """The answer loss; with a typed twin (``distill``), plus ``distill`` x how far each spoken row's states at
        its answer positions are, layer by layer, from the typed question's (no gradient through the typed
        forward). Why: the answer tokens only say whether the spoken row ended right, while the typed states say
        what the model should hold at every layer to get there -- which shape it is looking for, say."""
        if batch.teacher is None:
            return super().loss(batch, shared_prefix)
        tiles, images = self.image_tiles(batch), batch.image_of_row  # the same images in both forwards: run once
        layers, offset = self.hidden(self.embeds(batch, tiles), images, shared_prefix, True, self.lengths(batch))
        loss, correct = self.answer_loss(layers[-1], offset, batch)
        with torch.no_grad():
            typed, typed_offset = self.hidden(self.embeds(batch.teacher, [t.detach() for t in tiles]),
                                              batch.image_of_row, shared_prefix, True, self.lengths(batch.teacher))
        rows, cols, _ = self.predicting(batch, offset)
        typed_rows, typed_cols, _ = self.predicting(batch.teacher, typed_offset)
        aloud = batch.spoken[rows]
        gaps = []
        for mine, theirs in zip(layers[1:], typed[1:]):  # layer 0 (the answer tokens' embeddings) is the same
            target = theirs[typed_rows, typed_cols - typed_offset][aloud]
            error = (mine[rows, cols - offset][aloud] - target).pow(2).mean()
            gaps.append(error / target.pow(2).mean().clamp(min=1e-6))
        return loss + self.distill * torch.stack(gaps).mean(), correct

    def masked(self, audio: Any, keys: list[str | None]) -> Any:
        """``audio`` (the encoder's fbank batch) with ``masks`` applied to the clips whose key is not None."""
        if self.masks is None:
            return audio
        fill = self.audio.encoder.global_cmvn.mean  # zero once the encoder normalises its input
        return dataclasses.replace(audio, features=self.masks.apply(audio.features, audio.lengths, fill, keys))

    def audio_features(self, batch: Batch) -> list[torch.Tensor]:
        """Each spoken row's audio tokens, through the encoder's forward (with gradients when it is trained)."""
        features, lengths = batch.audio.features, batch.audio.lengths
        param = next(self.audio.parameters())
        with torch.set_grad_enabled("audio" in self.trained and torch.is_grad_enabled()):
            out = self.audio._forward(features.to(param.device, param.dtype), lengths.to(param.device))
        return [row[:n] for row, n in zip(out, self.audio.planned_tokens(batch.audio))]


def cmvn_stats(trainer: SpokenTrainer, utterances: int = CMVN_UTTERANCES) -> tuple[int, list[float], list[float]]:
    """(frames, per-bin sums, per-bin sums of squares) of the fbank features of ``utterances`` training
    questions in training voices: the global CMVN a fresh whale encoder normalises its input with."""
    texts = sorted({q for i in range(200) for q, _, _ in synthetic.questions_for(synthetic.example("train", i).scene)})
    clips = [trainer.bank.waveform(texts[i % len(texts)], speech.train_voice(i)) for i in range(utterances)]
    batch = trainer.audio.preprocess([torch.from_numpy(c) for c in clips], speech.SAMPLE_RATE)
    valid = torch.arange(batch.features.shape[1]).unsqueeze(0) < batch.lengths.unsqueeze(1)
    frames = batch.features[valid].double()
    return int(frames.shape[0]), frames.sum(0).tolist(), (frames * frames).sum(0).tolist()


def set_cmvn(encoder: Any, stats: tuple[int, list[float], list[float]]) -> None:
    """Put ``stats`` into the encoder's CMVN buffers with the loader's formula for the JSON file (mean =
    sum / n, variance = sum of squares / n - mean^2 floored at 1e-20, istd = 1 / sqrt(variance))."""
    count, sums, squares = stats
    mean = [s / count for s in sums]
    istd = [1.0 / math.sqrt(max(q / count - m * m, 1e-20)) for q, m in zip(squares, mean)]
    cmvn = encoder.encoder.global_cmvn
    cmvn.mean.copy_(torch.tensor(mean, dtype=cmvn.mean.dtype))
    cmvn.istd.copy_(torch.tensor(istd, dtype=cmvn.istd.dtype))


def spoken_requests(pipeline: Any, examples: list[synthetic.Example], bank: speech.SpeechBank) -> list[Any]:
    """Each held-out question asked aloud in the held-out voice, about its image, as generation takes it."""
    from vita_framework.request import Request

    return [Request("", images=[e.image()], audios=[(bank.waveform(e.question, speech.HELDOUT_VOICE),
                                                     speech.SAMPLE_RATE)]) for e in examples]


def write_questions(sample: synthetic.Example, bank: speech.SpeechBank, directory: Any) -> list[dict[str, str]]:
    """The sample scene's questions spoken in the held-out voice, as 16 kHz WAV files with ``questions.json``
    (file, question, answer, kind, voice): shipped beside the sample image so tests and the README can ask the
    bundle aloud without a speech engine."""
    import json
    from pathlib import Path

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    scene = sample.scene
    first = min(scene.shapes, key=lambda s: synthetic.SHAPES.index(s.kind))
    asked = [(q, a, k) for q, a, k in synthetic.questions_for(scene)
             if k in ("describe", "count") or q.endswith((f" {first.colour}?", f" {first.kind}?"))]
    entries = []
    for question, answer, kind in asked:
        name = f"{kind}.wav"
        speech.write_wav(directory / name, bank.waveform(question, speech.HELDOUT_VOICE))
        entries.append({"file": name, "question": question, "answer": answer, "kind": kind,
                        "voice": speech.HELDOUT_VOICE.key})
    (directory / "questions.json").write_text(json.dumps(entries, indent=2) + "\n")
    return entries


def question_texts() -> list[str]:
    """Every distinct question of the synthetic data (the speech warm-up's classes), in a fixed order."""
    texts = [synthetic.DESCRIBE, synthetic.COUNT]
    texts += [f"What shape is {c}?" for c in sorted(synthetic.COLOURS)]
    texts += [f"What colour is the {s}?" for s in synthetic.SHAPES]
    texts += [f"Where is the {c} {s}?" for c in sorted(synthetic.COLOURS) for s in synthetic.SHAPES]
    return texts


def warm_up_speech(trainer: SpokenTrainer, *, steps: int, clips_per_step: int, lr: float, weight_decay: float = 0.01,
                   grad_clip: float = 1.0, log_every: int = 50, log: Any = print) -> list[dict[str, float]]:
    """Train the audio encoder to tell which question a clip asks (a linear head on its mean audio token).

    Why: as region labels do for the tower, a direct label per clip teaches the encoder to hear the words
    that matter (the colour, the shape, the kind of question) far faster than answer tokens reaching it through
    the LLM; the head is thrown away and the speech stage then trains on answers."""
    from torch import nn

    from .progress import progress

    if steps <= 0:
        return []
    texts = question_texts()
    param = next(trainer.audio.parameters())
    head = nn.Linear(trainer.audio.hidden_size, len(texts)).to(param.device, param.dtype)
    trainer.learn(["audio"])
    params = [p for p in trainer.audio.parameters() if p.requires_grad] + list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.98))
    trainer.set_mode(True)
    history: list[dict[str, float]] = []
    running_loss, hits, seen = 0.0, 0, 0
    for step in progress(range(steps), desc="speech warm-up"):
        for group in optimizer.param_groups:  # cosine decay to 5 % over the stage
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        rng = random.Random(f"speech-warmup/{step}")
        labels = [rng.randrange(len(texts)) for _ in range(clips_per_step)]
        clips = [trainer.bank.waveform(texts[k], speech.train_voice(step * clips_per_step + i))
                 for i, k in enumerate(labels)]
        if trainer.perturb is not None:
            clips = [trainer.perturb.apply(c, f"warmup/{step}/{i}") for i, c in enumerate(clips)]
        batch = trainer.audio.preprocess([torch.from_numpy(c) for c in clips], speech.SAMPLE_RATE)
        batch = trainer.masked(batch, [f"warmup/{step}/{i}" for i in range(len(clips))])
        tokens = trainer.audio_features(Batch(None, None, None, [], None, batch))
        logits = head(torch.stack([t.mean(0) for t in tokens]))
        target = torch.tensor(labels, device=logits.device)
        loss = nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        running_loss += loss.item()
        hits += int((logits.argmax(-1) == target).sum())
        seen += len(labels)
        if (step + 1) % log_every == 0 or step + 1 == steps:
            n = (step % log_every) + 1
            record = {"stage": "speech_warmup", "step": step + 1, "loss": running_loss / n,
                      "question_acc": hits / max(1, seen)}
            history.append(record)
            log("speech warm-up step {step:>5}  loss {loss:.4f}  question acc {question_acc:.3f}".format(**record))
            running_loss, hits, seen = 0.0, 0, 0
    trainer.set_mode(False)
    heard = heldout_voice_hits(trainer, head, texts)
    history.append({"stage": "speech_warmup", "step": steps, "heldout_voice_question_acc": heard / len(texts)})
    trained = history[-2]["question_acc"]
    log(f"speech warm-up: the held-out voice ({speech.HELDOUT_VOICE.key}) asks {heard}/{len(texts)} questions "
        f"the head tells apart ({heard / len(texts):.3f}; training voices, last steps: {trained:.3f})")
    return history


def heldout_voice_hits(trainer: SpokenTrainer, head: Any, texts: list[str]) -> int:
    """How many of ``texts``, spoken by the held-out voice, the warm-up head names right: the gap to the
    training voices' rate says how much of what the encoder learnt is the voices rather than the words."""
    clips = [trainer.bank.waveform(t, speech.HELDOUT_VOICE) for t in texts]
    batch = trainer.audio.preprocess([torch.from_numpy(c) for c in clips], speech.SAMPLE_RATE)
    with torch.no_grad():
        tokens = trainer.audio_features(Batch(None, None, None, [], None, batch))
        logits = head(torch.stack([t.mean(0) for t in tokens]))
    return int((logits.argmax(-1) == torch.arange(len(texts), device=logits.device)).sum())
