"""What a training run builds and where each part starts from, checked before any weight is touched.

Why: ``python -m vita_framework.train`` takes the inference app's component overrides (``+vision=timm``,
``projector=...``, ``fusion=...``), so a run can ask for a part that has no trained weights anywhere (a timm
tower, a projector for it) and freeze it at the same time. :func:`plan_run` works out, from the configs alone,
which parts start from the starting bundle and which start fresh, and refuses (every problem at once, naming
the option and the fix) a run that could not produce what it was asked for -- before any training.

Starting points (``init``): ``random`` builds every part from ``arch`` with a fresh tokenizer (how the shipped
bundle was made); ``default`` starts from the embedded default bundle: its LLM and tokenizer always, its
InternViT tower and mlp2x_gelu projector when the composition has them (they were trained together), and a
fresh part for anything else, sized from the parts it connects (a projector from the new tower's width).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vita_framework.errors import ConfigError, ValidationErrors

#: config groups a training run takes from the inference app (the same YAML options, the same overrides)
GROUPS = ("vision", "projector", "fusion", "llm")
INITS = ("random", "default")
#: modules a stage can train, as ``learn.<name>``
LEARNABLE = ("vision", "projector", "llm")


@dataclass
class Plan:
    """Where each part starts and what a bundle of this run needs to load back."""

    init: str
    #: kinds whose starting-bundle tensors do not fit this composition: replaced by freshly built ones
    replaced: list[str]
    #: kind -> why it starts untrained (random init)
    untrained: dict[str, str]
    #: the overrides ``python -m vita_framework checkpoint=<bundle>`` needs for this composition
    load_overrides: list[str]
    #: the shipped bundle's own recipe (default composition from ``arch``): written in its exact layout
    default_recipe: bool
    warnings: list[str] = field(default_factory=list)


def component_overrides(task_overrides: list[str]) -> list[str]:
    """The command-line overrides that choose or configure a component (``+vision=timm``, ``vision.model=x``,
    ``projector=linear``), in order; ``+vision=internvit`` first when no vision was chosen."""
    picked = [o for o in task_overrides if _key(o).split(".")[0].split("/")[0] in GROUPS]
    if not any(_key(o) == "vision" for o in picked):
        picked.insert(0, "+vision=internvit")
    return picked


def _key(override: str) -> str:
    return override.partition("=")[0].lstrip("+~")


def run_config(cfg: Any, checkpoint: Any, *, device: str = "cpu", seed: int = 0) -> Any:
    """The inference run config this training run builds its pipeline from: the inference app's defaults, the
    training config's component nodes (the very options it was given, audio included), float32."""
    from omegaconf import OmegaConf, open_dict

    from vita_framework.config import compose
    from vita_framework.schema import validate_run_config

    from .bundle import run_overrides

    run = compose(run_overrides(checkpoint, device, seed))
    with open_dict(run):
        for group in (*GROUPS, "audio"):
            node = cfg.get(group)
            if node is not None:
                run[group] = OmegaConf.create(OmegaConf.to_container(node, resolve=True))
        pad = cfg.get("pad_to_square")  # the recipe's choice for a tower that pads, unless its own option says
        if pad is not None and "pad_to_square" in run.vision and run.vision.pad_to_square is None:
            run.vision.pad_to_square = bool(pad)
        arch = (cfg.get("speech") or {}).get("arch")  # a fresh whale encoder's size (the shipped recipe's)
        audio = run.get("audio")
        if arch is not None and audio is not None and audio.get("component") == "whale":
            audio.arch = OmegaConf.merge(audio.arch, arch)
    validate_run_config(run)
    return run


def plan_run(cfg: Any, task_overrides: list[str]) -> Plan:
    """Check the training config against its composition; raise :class:`ValidationErrors` listing every
    problem (with the option to change), else return the :class:`Plan`. Reads configs only."""
    from .averaging import average_problems
    from .bundle import weight_prefixes

    problems: list[str] = []
    init = str(cfg.get("init", "random"))
    if init not in INITS:
        problems.append(
            f"init={init} is not one of {', '.join(INITS)} (random: every part from `arch`; "
            "default: the embedded default bundle's LLM and tokenizer)"
        )
        init = "random"
    pad = cfg.get("pad_to_square")
    if pad is not None and not isinstance(pad, bool):
        problems.append(f"pad_to_square must be true, false or null (the tower's own choice); got {pad!r}")
    problems += count_problems(cfg)
    learn = {name: bool((cfg.get("learn") or {}).get(name, False)) for name in LEARNABLE}
    unknown = sorted(set(cfg.get("learn") or {}) - set(LEARNABLE))
    problems += [f"unknown option learn.{k}; valid: {', '.join(f'learn.{n}' for n in LEARNABLE)}" for k in unknown]
    try:
        base = weight_prefixes(run_config({}, "null"))
        mine = weight_prefixes(run := run_config(cfg, "null"))
    except (ConfigError, ValueError) as exc:
        raise ValidationErrors([*problems, str(exc)]) from None
    same_vision = run.vision.component == "internvit" and mine["vision"] == base["vision"]
    same_projector = same_vision and run.projector.component == "mlp2x_gelu" and mine["projector"] == base["projector"]
    replaced = [k for k, same in (("vision", same_vision), ("projector", same_projector)) if not same]
    audio_component = str((cfg.get("audio") or {}).get("component", "none"))
    problems += speech_problems(cfg, audio_component)
    problems += average_problems(cfg)
    fresh_audio = audio_component == "whale" and (init == "random" or not default_has_audio())
    replaced += ["audio"] if fresh_audio else []
    untrained: dict[str, str] = {}
    if init == "random":
        untrained = dict.fromkeys(LEARNABLE, "init=random")
    else:
        if not same_vision:
            untrained["vision"] = (
                f"vision '{run.vision.component}' has no tower in the embedded default bundle "
                "(an InternViT one), so it starts from its own initialisation"
            )
        if not same_projector:
            untrained["projector"] = (
                f"projector '{run.projector.component}' for vision '{run.vision.component}' "
                "starts fresh (the default's mlp2x_gelu was trained on InternViT features)"
            )
    if fresh_audio:
        untrained["audio"] = ("init=random" if init == "random" else
                              "the embedded default bundle has no whale encoder, so it starts fresh")
    warmup, align, steps = int(cfg.vision_warmup.steps), int(cfg.align.steps), int(cfg.steps)
    trains = {
        "vision": learn["vision"] and (warmup > 0 or steps > 0),
        "projector": align > 0 or (learn["projector"] and (warmup > 0 or steps > 0)),
        "llm": learn["llm"] and steps > 0,
        "audio": audio_component == "whale" and int((cfg.get("speech") or {}).get("steps", 0)) > 0,
    }
    if not any(trains.values()):
        problems.append(
            "nothing would be trained: set align.steps > 0, speech.steps > 0 (with audio=whale), or steps > 0 "
            "with one of learn.vision, learn.projector, learn.llm true"
        )
    if "projector" in untrained and not trains["projector"]:
        problems.append(
            f"the projector is never trained but has no trained weights: {untrained['projector']}. "
            "Set learn.projector=true (with steps or vision_warmup.steps > 0) or align.steps > 0"
        )
    if "llm" in untrained and not trains["llm"]:
        problems.append(
            "the LLM starts from random weights (init=random) but is never trained: set learn.llm=true "
            "and steps > 0, or init=default to start from the embedded default's trained LLM"
        )
    notes = []
    if "vision" in untrained and not trains["vision"]:
        notes.append(
            f"the vision tower stays frozen at its initialisation ({untrained['vision']}): random "
            "features unless its options load weights (e.g. vision.weights=<file> for timm); "
            "learn.vision=true with vision_warmup.steps > 0 trains it"
        )
    if fresh_audio and int((cfg.get("speech") or {}).get("steps", 0)) <= 0:
        problems.append(
            f"audio=whale would stay untrained ({untrained['audio']}) with speech.steps=0: set speech.steps > 0 "
            "to teach it spoken questions, or audio=none"
        )
    default_recipe = init == "random" and replaced in ([], ["audio"]) and run.llm.component == "qwen2"
    if bool(cfg.get("ship")) and not default_recipe:
        problems.append(
            "ship=true replaces the embedded default bundle, which is the internvit + mlp2x_gelu + "
            "qwen2 recipe from `arch` (init=random, train=full); drop ship=true for this composition"
        )
    if problems:
        raise ValidationErrors(problems)
    load = component_overrides(list(task_overrides)) + (["+audio=whale"] if audio_component == "whale" else [])
    return Plan(init, replaced, untrained, load, default_recipe, notes)


def default_has_audio() -> bool:
    """Whether the embedded default bundle holds a whale encoder (its config names an audio directory)."""
    import json

    from vita_framework.weights import default_bundle_path

    config = json.loads((default_bundle_path() / "config.json").read_text())
    return bool(config.get("mm_audio_encoder"))


def count_problems(cfg: Any) -> list[str]:
    """Thread and worker counts that torch or the loader would refuse only once a stage starts, named now."""
    speech = cfg.get("speech") or {}
    counts = {"threads": (cfg.get("threads", 1), 1, False), "workers": (cfg.get("workers", 0), 0, False),
              "speech.threads": (speech.get("threads"), 1, True),
              "speech.workers": (speech.get("workers", 0), 0, False)}
    problems = []
    for key, (value, least, nullable) in counts.items():
        whole = isinstance(value, int) and not isinstance(value, bool)
        if not ((nullable and value is None) or (whole and value >= least)):
            problems.append(f"{key} must be a whole number >= {least}{' or null (as `threads`)' if nullable else ''}; "
                            f"got {value!r}")
    return problems


def speech_problems(cfg: Any, audio: str) -> list[str]:
    """What stops the speech stage: an audio encoder it cannot train, or no way to make speech data."""
    steps = int((cfg.get("speech") or {}).get("steps", 0))
    if audio not in ("whale", "none"):
        return [f"audio={audio}: the training app teaches spoken questions to the whale encoder only; use "
                "audio=whale, or audio=none for typed questions only"]
    if audio == "none" or steps <= 0:
        return []
    from .specmask import feature_masks
    from .speech import espeak_binary, perturbation

    problems = []
    try:
        feature_masks((cfg.get("speech") or {}).get("specaugment"))
    except ConfigError as exc:
        problems.append(str(exc))
    try:
        perturbation((cfg.get("speech") or {}).get("augment"))
    except (ConfigError, TypeError, ValueError) as exc:
        problems.append(str(exc) if isinstance(exc, ConfigError) else
                        f"speech.augment: each of speed, gain_db, snr_db is [low, high] or null ({exc})")
    distill = (cfg.get("speech") or {}).get("distill")
    number = isinstance(distill, (int, float)) and not isinstance(distill, bool)
    if distill is not None and not (number and 0 <= distill < float("inf")):
        problems.append(f"speech.distill must be a number >= 0 (0: off; e.g. 1.0); got {distill!r}")
    learn_encoder = (cfg.get("speech") or {}).get("learn_encoder", True)
    if not isinstance(learn_encoder, bool):
        problems.append(f"speech.learn_encoder must be true (the speech stage trains the whole whale encoder) or "
                        f"false (its adapter only; the body keeps the speech warm-up's); got {learn_encoder!r}")
    try:
        espeak_binary()
    except ConfigError as exc:
        problems.append(f"speech.steps={steps}: {exc}")
    return problems


def check_warmup(trainer: Any, steps: int) -> None:
    """Region labels (``vision_warmup``) need one LLM position per tower token on a square grid: refuse a
    composition whose projector or fusion changes the count, before the stage starts."""
    if steps <= 0:
        return
    tokens, rows = int(trainer.tokens_per_tile), int(trainer.image_rows)
    side = int(round(tokens**0.5))
    if rows != tokens or side * side != tokens:
        raise ConfigError(
            f"vision_warmup.steps={steps}: region labels need the projector and fusion to keep one "
            f"token per tower token on a square grid, but the tower gives {tokens} tokens and the "
            f"LLM receives {rows} per image; set vision_warmup.steps=0 (align.steps trains the "
            "projector on answers instead)"
        )
