"""Error types of the framework.

Every error a user can cause (a typo in a config, a bad file, a checkpoint that does not fit) is one of
these, and its message says what was wrong and what to type or change instead. The CLI prints them as
``error: <message>`` with exit status 2 and no traceback (``VITA_DEBUG=1`` shows it).
"""

from __future__ import annotations


class VitaError(Exception):
    """Base of every error the framework raises on purpose."""


class ConfigError(VitaError):
    """The composed configuration is invalid (unknown key, bad value)."""


class UnknownComponentError(ConfigError):
    """A config names a component no plugin registered."""


class ComponentConfigError(ConfigError):
    """A component's options do not fit the schema its plugin registered."""


class DuplicateComponentError(VitaError):
    """Two plugins registered the same component name for the same kind."""


class PluginLoadError(VitaError):
    """A plugin could not be imported or its hook raised."""


class FusionError(VitaError):
    """Placeholders in the prompt and encoded features do not line up."""


class InputError(VitaError):
    """A user input (file, prompt, request) cannot be used."""


class CheckpointError(VitaError):
    """A checkpoint directory is missing files or holds tensors that do not fit."""


class GenerationError(VitaError):
    """Generation cannot go on: a component produced values that make its output meaningless (non-finite
    logits from NaN weights or float16 overflow)."""


class DuplicateModalityError(VitaError):
    """Two plugins registered modalities with the same name, marker, request key or placeholder id."""


class ContractError(VitaError):
    """A plugin's component lacks a member its kind's contract requires (see ``vita_framework.contracts``)."""


class ValidationErrors(ConfigError):
    """Several problems found while validating a run before anything was loaded; all are listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            super().__init__(f"{len(self.problems)} problems in the configuration:\n{lines}")


class HubError(CheckpointError):
    """A checkpoint or model named by a hub id (``org/name[@revision]``) cannot be fetched or found in the local
    cache: no such repository or revision, a gated repository without an allowed token, offline and not cached, or a
    download that was cut."""


class QuantizationError(ConfigError):
    """A quantization mode the device, the dtype or the installed packages do not support."""


class MemoryPlanError(VitaError):
    """The memory plan says the configuration does not fit the chosen device or budget (raised before loading)."""
