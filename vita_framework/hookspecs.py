"""Hook specifications: one ``register`` hook per component kind.

A plugin (built-in or third party) implements any of these with ``@hookimpl`` and calls
``register(name, factory, *, schema=None, description="")`` once per component it provides.
``factory(config, context)`` receives the validated options (an instance of ``schema`` when one is given,
else a plain dict) and a :class:`vita_framework.registry.BuildContext`; it returns the component.
Factories import heavy libraries (torch, transformers) themselves, so that listing plugins and
composing configs stays fast.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "vita_framework"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def vita_register_vision_encoders(register):
    """Register vision encoders (images and video frames -> one feature tensor per tile or frame)."""


@hookspec
def vita_register_audio_encoders(register):
    """Register audio encoders (waveforms -> one feature tensor per clip, already at the LLM width)."""


@hookspec
def vita_register_projectors(register):
    """Register projectors mapping vision features to the LLM's hidden size."""


@hookspec
def vita_register_fusion_strategies(register):
    """Register fusion strategies (how encoded features are reduced and spliced into the text embeddings)."""


@hookspec
def vita_register_llm_backbones(register):
    """Register LLM backbones (a tokenizer plus a causal LM that generates from ``inputs_embeds``)."""


#: kind name used in configs and the registry -> hook name
HOOKS_BY_KIND: dict[str, str] = {
    "vision": "vita_register_vision_encoders",
    "audio": "vita_register_audio_encoders",
    "projector": "vita_register_projectors",
    "fusion": "vita_register_fusion_strategies",
    "llm": "vita_register_llm_backbones",
}
