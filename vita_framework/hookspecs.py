"""Hook specifications: how a plugin (built-in or third party) adds modalities and components.

A plugin module implements any of these with ``@hookimpl``. Every hook receives one ``register`` callable and
returns nothing; a hook is called exactly once per process, when the plugin manager
(:mod:`vita_framework.plugin_manager`) loads the plugins, in this order: modalities first (they declare the
encoder kinds), then every component hook. Implementations may call ``register`` any number of times.

Component registration takes ``register(name, factory, *, schema=None, description="", claims=None)``:

- ``factory(options, context)`` builds the component from its validated options (an instance of ``schema``,
  else a plain dict) and a :class:`vita_framework.registry.BuildContext`. It imports heavy libraries (torch,
  transformers) itself, so listing plugins and composing configs stays fast. The returned object must satisfy
  its kind's contract in :mod:`vita_framework.contracts`; the registry checks it.
- ``schema`` is a dataclass; its fields are the options users set in YAML or on the command line.
- ``claims(options) -> list[str]`` names the checkpoint key prefixes the component reads from a bundle. Without
  it, a ``weights_prefix`` field of the schema is the claim. The LLM takes the tensors nobody claims.

Hooks are grouped by what they register: modalities, encoders, then the components after the encoders.
"""

from __future__ import annotations

import pluggy

PROJECT_NAME = "vita_framework"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


# -- modalities ----------------------------------------------------------------------------------------------
@hookspec
def vita_register_modalities(register):
    """Register input modalities (image, video, audio, or a new kind such as depth maps).

    Called once per process, before every component hook, when the plugin manager loads the plugins. A
    modality's ``encoder`` names a component kind; a kind no built-in defines becomes a new config group and
    registry kind, filled through :func:`vita_register_encoders`.

    :param register: ``register(modality)`` with a :class:`vita_framework.modalities.Modality`. A name,
        marker, request key or placeholder id already registered by another plugin is an error naming both
        packages.
    :returns: nothing; results of this hook are ignored.
    """


# -- encoders ------------------------------------------------------------------------------------------------
@hookspec
def vita_register_vision_encoders(register):
    """Register vision encoders: images and video frames to one feature tensor per tile or frame.

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy
    :class:`vita_framework.contracts.VisionEncoder`.

    :param register: ``register(name, factory, *, schema=None, description="", claims=None)`` (module docs).
    :returns: nothing; results of this hook are ignored.
    """


@hookspec
def vita_register_audio_encoders(register):
    """Register audio encoders: waveforms to one feature tensor per clip, already at the LLM width.

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy
    :class:`vita_framework.contracts.AudioEncoder`.

    :param register: ``register(name, factory, *, schema=None, description="", claims=None)`` (module docs).
    :returns: nothing; results of this hook are ignored.
    """


@hookspec
def vita_register_encoders(register):
    """Register encoders of any kind a modality declares, including kinds a plugin's own modality adds.

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy the
    contract of the modalities it serves (:class:`vita_framework.contracts.Encoder` for a new kind).

    :param register: ``register(kind, name, factory, *, schema=None, description="", claims=None)``; ``kind``
        is a modality's ``encoder`` (``vision``, ``audio``, ``depth``, ...). An unknown kind is an error listing
        the known ones.
    :returns: nothing; results of this hook are ignored.
    """


# -- after the encoders ------------------------------------------------------------------------------------
@hookspec
def vita_register_projectors(register):
    """Register projectors mapping vision features to the LLM width (and possibly fewer tokens per tile).

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy
    :class:`vita_framework.contracts.Projector`; its factory finds the built encoder and LLM in
    ``context.components`` to derive its widths.

    :param register: ``register(name, factory, *, schema=None, description="", claims=None)`` (module docs).
    :returns: nothing; results of this hook are ignored.
    """


@hookspec
def vita_register_fusion_strategies(register):
    """Register fusion strategies: how encoded features are reduced and spliced into the text embeddings.

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy
    :class:`vita_framework.contracts.FusionStrategy`; :class:`vita_framework.fusion.SpliceFusion` is a base to
    build on.

    :param register: ``register(name, factory, *, schema=None, description="", claims=None)`` (module docs).
    :returns: nothing; results of this hook are ignored.
    """


@hookspec
def vita_register_llm_backbones(register):
    """Register LLM backbones: a tokenizer plus a causal LM that generates from ``inputs_embeds``.

    Called once per process after :func:`vita_register_modalities`. The built component must satisfy
    :class:`vita_framework.contracts.LLMBackbone`; :class:`vita_framework.causal_lm.CausalLMBackbone` wraps any
    transformers causal LM. The LLM is built first and takes the checkpoint tensors no other component claims.

    :param register: ``register(name, factory, *, schema=None, description="", claims=None)`` (module docs).
    :returns: nothing; results of this hook are ignored.
    """


#: the hook that registers modalities
MODALITY_HOOK = "vita_register_modalities"
#: hooks bound to one component kind: kind -> hook name
HOOKS_BY_KIND: dict[str, str] = {
    "vision": "vita_register_vision_encoders",
    "audio": "vita_register_audio_encoders",
    "projector": "vita_register_projectors",
    "fusion": "vita_register_fusion_strategies",
    "llm": "vita_register_llm_backbones",
}
#: the hook whose ``register`` takes the kind as its first argument
ANY_ENCODER_HOOK = "vita_register_encoders"
