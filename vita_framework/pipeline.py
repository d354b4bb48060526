"""The pipeline: the flow of design.md §1 and nothing else.

preprocess -> encode -> project -> reduce -> prompt with placeholders -> fuse -> generate. A request
without images runs no vision encoder; nothing is encoded as a dummy.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, InputError
from .inputs import load_image
from .prompt import (
    AUDIO_MARKER,
    IMAGE_MARKER,
    PLACEHOLDER_IDS,
    get_template,
    modality_of,
    tokenize_with_placeholders,
    user_text,
)

DEFAULT_QUESTION = "Describe this image."


@dataclass
class Request:
    prompt: str | None = None
    images: list[Any] = field(default_factory=list)
    audios: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    video_fps: float | None = None


@dataclass
class RowResult:
    prompt: str
    text: str
    generated_ids: list[int]
    tokens_in: dict[str, int]
    tokens_out: int
    error: str | None = None  # set when this row's inputs failed; the other rows still ran
    expected: str | None = None  # the reference answer, when scored against an eval dataset

    def to_dict(self) -> dict[str, Any]:
        out = {"prompt": self.prompt, "text": self.text, "generated_ids": self.generated_ids,
               "tokens_in": self.tokens_in, "tokens_out": self.tokens_out}
        if self.error is not None:
            out["error"] = self.error
        if self.expected is not None:
            out["expected"] = self.expected
        return out


@dataclass
class GenerationResult:
    rows: list[RowResult]
    timings: dict[str, float]
    scores: Any = None  # [B, steps, V] processed scores when asked for

    @property
    def text(self) -> str:
        return self.rows[0].text

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [r.to_dict() for r in self.rows], "timings": self.timings}


class _Clock:
    """A transformers streamer that records the first new token's time and forwards to another streamer."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.start = time.perf_counter()
        self.first: float | None = None
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:  # generate() first puts the prompt (empty for inputs_embeds)
            self._prompt_seen = True
        elif self.first is None:
            self.first = time.perf_counter()
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()


class Pipeline:
    """Built components wired in the one-way flow. Build it with :func:`vita_framework.build`."""

    def __init__(self, *, llm: Any, fusion: Any, vision: Any = None, projector: Any = None, audio: Any = None,
                 template: str = "qwen2p5_instruct", generation: dict[str, Any] | None = None,
                 seed: int | None = 0, config: Any = None, max_length: int | None = None,
                 video: dict[str, Any] | None = None, reused_components: list[str] | None = None) -> None:
        self.llm, self.fusion, self.vision, self.projector, self.audio = llm, fusion, vision, projector, audio
        self.template = get_template(template)
        self.generation_options = dict(generation or {})
        self.seed = seed
        self.config = config
        self.max_length = max_length  # longest spliced sequence allowed (context / tokenizer_model_max_length)
        self.video_options = dict(video or {})
        self.reused_components = list(reused_components or [])  # taken from a sweep's component cache

    # -- encoding ------------------------------------------------------------------------------------
    def _project(self, features: list[Any]) -> list[Any]:
        import torch

        if not features:
            return []
        with torch.inference_mode():
            return list(self.projector(torch.stack(features)).unbind(0))

    def _vision_inputs(self, request: Request) -> tuple[Any, list[int], list[int]]:
        """Preprocess images (tiles) and videos (sampled frames) into one batch; nothing is encoded yet.

        Returns the batch (or None), the group id of every tile/frame (0: still image, k: frame of video k)
        and the tile count of each image.
        """
        if not request.images and not request.videos:
            return None, [], []
        if self.vision is None:
            what = "images" if request.images else "videos"
            raise ConfigError(f"{what} were given but no vision encoder is configured; add +vision=internvit")
        batches, groups, tiles = [], [], []
        if request.images:
            batch = self.vision.preprocess([load_image(i) for i in request.images])
            batches.append(batch)
            tiles = list(batch.tiles_per_item)
            groups += [0] * sum(tiles)
        if request.videos:
            from .video_io import load_video

            for k, video in enumerate(request.videos, start=1):
                clip = load_video(video, fps=request.video_fps, **self.video_options)
                batches.append(self.vision.preprocess_frames(clip.frames))
                groups += [k] * len(clip.frames)
        if len(batches) == 1:
            return batches[0], groups, tiles
        import torch

        first = batches[0]
        merged = type(first)(torch.cat([b.pixel_values for b in batches]),
                             [n for b in batches for n in b.tiles_per_item])
        return merged, groups, tiles

    def _audio_inputs(self, audios: list[Any]) -> Any:
        if not audios:
            return None
        if self.audio is None:
            raise ConfigError("audios were given but no audio encoder is configured; add +audio=whale")
        from .audio_io import load_audio

        rate = int(getattr(self.audio, "sample_rate", 16000))
        limit = getattr(self.audio, "max_seconds", None)
        waves = [load_audio(a, target_rate=rate, max_seconds=limit) for a in audios]
        return self.audio.preprocess(waves, rate)

    def _check_budget(self, text: str, vision_tokens: list[int], audio_tokens: list[int] | None,
                      groups: list[int]) -> None:
        """Refuse, before encoding, a request whose spliced length exceeds the context (the reference
        silently truncates at tokenizer_model_max_length, which can cut through an image)."""
        if self.max_length is None:
            return
        n_text = len(tokenize_with_placeholders(self.llm.tokenizer, text, [0] * text.count(IMAGE_MARKER),
                                                [0] * text.count(AUDIO_MARKER)))
        n_video = sum(t for t, g in zip(vision_tokens, groups) if g > 0)
        n_image = sum(vision_tokens) - n_video
        n_audio = sum(audio_tokens or [])
        total = n_text + n_image + n_video + n_audio
        if total > self.max_length:
            hints = []
            if n_video:
                hints.append("fewer video frames (video.max_frames=...) or fusion=slow_fast")
            if n_image:
                hints.append("fewer tiles (vision.max_tiles=...)")
            if n_audio:
                hints.append("shorter audio")
            raise InputError(
                f"the request needs {total} positions (text {n_text}, image {n_image}, video {n_video}, audio "
                f"{n_audio}) but the model allows {self.max_length}; use {' or '.join(hints) or 'a shorter prompt'}"
            )

    # -- one request ---------------------------------------------------------------------------------
    def prepare(self, request: Request) -> tuple[list[int], dict[str, list[Any]], str, dict[str, int]]:
        """Encode a request's inputs and build its placeholder ids; returns ids, features, prompt, counts."""
        if request.prompt is not None:
            question = request.prompt
        else:  # as the reference demo: an audio query has an empty text question
            question = "" if request.audios else DEFAULT_QUESTION
        vision_batch, groups, tiles = self._vision_inputs(request)
        audio_batch = self._audio_inputs(list(request.audios))
        frames = [groups.count(k) for k in range(1, len(request.videos) + 1)]
        modality = modality_of(bool(tiles), bool(frames))
        n_audio = len(request.audios)
        text = self.template.render(user_text(question, tiles, frames, n_audio), modality, self.llm.tokenizer)
        if vision_batch is not None:
            per_item = [int(self.vision.tokens_per_tile)] * len(groups) if hasattr(self.vision, "tokens_per_tile") \
                else None
            resample = getattr(self.projector, "output_tokens", None)  # a token-compressing projector
            if per_item is not None and resample is not None:
                per_item = [int(resample(n)) for n in per_item]
            reducer = getattr(self.fusion, "reduced_tokens", None)
            if per_item is not None and reducer is not None:
                expected = getattr(self.audio, "output_tokens", None)
                audio_expected = expected(audio_batch) if expected and audio_batch is not None else None
                self._check_budget(text, reducer(per_item, groups), audio_expected or [], groups)
        image_features: list[Any] = []
        if vision_batch is not None:
            encoded = self._project(self.vision.encode(vision_batch))
            image_features = self.fusion.reduce("image", encoded, groups)
        audio_features: list[Any] = []
        if audio_batch is not None:
            encoded_audio = self.audio.encode(audio_batch)
            audio_features = self.fusion.reduce("audio", encoded_audio, [0] * len(encoded_audio))
        image_tokens = [int(f.shape[0]) for f in image_features]
        audio_tokens = [int(f.shape[0]) for f in audio_features]
        ids = tokenize_with_placeholders(self.llm.tokenizer, text, image_tokens, audio_tokens)
        n_video = sum(t for t, g in zip(image_tokens, groups) if g > 0)
        counts = {"image": sum(image_tokens) - n_video, "video": n_video, "audio": sum(audio_tokens)}
        counts["text"] = len(ids) - sum(image_tokens) - counts["audio"]
        counts["total"] = len(ids)
        if self.max_length is not None and len(ids) > self.max_length:
            self._check_budget(text, image_tokens, audio_tokens, groups)
        return ids, {"image": image_features, "audio": audio_features}, question, counts

    def generate(self, prompt: str | None = None, *, images: list[Any] = (), audios: list[Any] = (),
                 videos: list[Any] = (), video_fps: float | None = None, streamer: Any = None,
                 output_scores: bool = False, **generation: Any) -> GenerationResult:
        """Answer one request. ``generation`` overrides the generation options for this call."""
        request = Request(prompt, list(images), list(audios), list(videos), video_fps)
        return self.run([request], streamer=streamer, output_scores=output_scores, **generation)

    def generate_batch(self, requests: list[Request | dict[str, Any]], *, batch_size: int = 8,
                       progress: bool = False, output_scores: bool = False, **generation: Any) -> GenerationResult:
        """Answer many requests, ``batch_size`` at a time (left-padded; each row stops on its own).

        A row whose inputs fail (missing file, marker mismatch, ...) gets its ``error`` set and no answer;
        the other rows still run. Rows come back in input order.
        """
        from .errors import VitaError
        from .requests_io import parse_request

        items = [r if isinstance(r, Request) else parse_request(r) for r in requests]
        rows: list[RowResult | None] = [None] * len(items)
        timings: dict[str, float] = {}
        scores = []
        bar = _progress(len(items), enabled=progress)
        for start in range(0, len(items), batch_size):
            chunk = list(range(start, min(start + batch_size, len(items))))
            ready = []
            t_start = time.perf_counter()
            for index in chunk:
                try:
                    ready.append((index, self.prepare(items[index])))
                except VitaError as exc:
                    rows[index] = RowResult(items[index].prompt or "", "", [], {}, 0, error=str(exc))
            if ready:
                result = self._generate_prepared([p for _, p in ready], t_start=t_start, output_scores=output_scores,
                                                 **generation)
                for (index, _), row in zip(ready, result.rows):
                    rows[index] = row
                for key, value in result.timings.items():
                    timings[key] = timings.get(key, 0.0) + value
                if result.scores is not None:
                    scores.append(result.scores)
            bar.update(len(chunk))
        bar.close()
        return GenerationResult([r for r in rows if r is not None], timings, scores or None)

    def stream(self, prompt: str | Request | None = None, **kwargs: Any):
        """Yield the answer's text pieces as they are generated, then the final :class:`GenerationResult`."""
        import threading

        from transformers import TextIteratorStreamer

        request = prompt if isinstance(prompt, Request) else Request(
            prompt, list(kwargs.pop("images", ())), list(kwargs.pop("audios", ())),
            list(kwargs.pop("videos", ())), kwargs.pop("video_fps", None))
        t_start = time.perf_counter()
        prepared = self.prepare(request)  # input errors surface here, before the thread starts
        streamer = TextIteratorStreamer(self.llm.tokenizer, skip_prompt=True, skip_special_tokens=True)
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["result"] = self._generate_prepared([prepared], t_start=t_start, streamer=streamer, **kwargs)
            except BaseException as exc:  # re-raised in the caller's thread
                box["error"] = exc
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        for piece in streamer:
            if piece:
                yield piece
        thread.join()
        if "error" in box:
            raise box["error"]
        yield box["result"]

    def run(self, requests: list[Request], *, streamer: Any = None, output_scores: bool = False,
            **generation: Any) -> GenerationResult:
        t_start = time.perf_counter()
        return self._generate_prepared([self.prepare(r) for r in requests], t_start=t_start, streamer=streamer,
                                       output_scores=output_scores, **generation)

    def _generate_prepared(self, prepared: list[tuple], *, t_start: float, streamer: Any = None,
                           output_scores: bool = False, **generation: Any) -> GenerationResult:
        """Pad, fuse and generate for already encoded requests; ``t_start`` is when their encoding began."""
        import torch

        t0 = t_start
        t_encode = time.perf_counter()
        width = max(len(p[0]) for p in prepared)
        pad = self.llm.tokenizer.pad_token_id or 0
        ids = torch.full((len(prepared), width), pad, dtype=torch.long)
        mask = torch.zeros((len(prepared), width), dtype=torch.long)
        for row, (row_ids, _, _, _) in enumerate(prepared):  # left padding: every row ends at the last slot
            ids[row, width - len(row_ids):] = torch.tensor(row_ids, dtype=torch.long)
            mask[row, width - len(row_ids):] = 1
        features = {m: [f for p in prepared for f in p[1][m]] for m in PLACEHOLDER_IDS}
        device = self.llm.device
        with torch.inference_mode():
            fused = self.fusion.fuse(ids.to(device), mask.to(device), self.llm.embed, features, PLACEHOLDER_IDS)
        options = {**self.generation_options, **generation}
        if output_scores:
            options["output_scores"] = True
        gen_config = self.llm.generation_config(options)
        if self.seed is not None:
            torch.manual_seed(self.seed)
        clock = _Clock(streamer)
        t_gen = time.perf_counter()
        clock.start = t_gen
        out = self.llm.generate(fused, gen_config, streamer=clock)
        t_end = time.perf_counter()
        sequences = out.sequences.cpu()
        eos = set(gen_config.eos_token_id or [])
        rows = []
        for row, (_, _, question, counts) in enumerate(prepared):
            new = sequences[row].tolist()
            n = _length_until_eos(new, eos, gen_config.pad_token_id)
            new = new[:n]
            text = self.llm.tokenizer.decode(new, skip_special_tokens=True).strip()
            rows.append(RowResult(question, text, new, counts, len(new)))
        first = clock.first or t_end
        n_out = max(r.tokens_out for r in rows)
        timings = {
            "encode_s": t_encode - t0, "fuse_s": t_gen - t_encode, "generate_s": t_end - t_gen,
            "time_to_first_token_s": first - t0,
            "decode_tokens_per_s": (n_out - 1) / (t_end - first) if n_out > 1 and t_end > first else 0.0,
            "total_s": t_end - t0,
        }
        scores = None
        if output_scores and out.scores is not None:
            scores = torch.stack(list(out.scores), dim=1).float().cpu()
        return GenerationResult(rows, timings, scores)


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, *, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="requests", unit="req")


def _length_until_eos(ids: list[int], eos: set[int], pad: int | None) -> int:
    """New tokens up to and including the first eos; later slots are padding of a finished row."""
    for i, token in enumerate(ids):
        if token in eos:
            return i + 1
    return len(ids)
