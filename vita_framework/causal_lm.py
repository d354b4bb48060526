"""A transformers causal LM + tokenizer behind the LLMBackbone contract: the base LLM plugins build on.

Heavy (imports torch at module level): import it from factories only.
"""

from __future__ import annotations

import json
import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from .devices import torch_dtype
from .errors import CheckpointError, ComponentConfigError, ConfigError
from .generation import merge_generation_options
from .placement import dispatch, parse_max_memory
from .quantization import quantize
from .weights import default_bundle_path, load_into, read_json, resolve_local_dir, unclaimed_state

# config.json keys that describe the LLM (everything else in a VITA config is about the other parts)
LLM_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "max_position_embeddings", "vocab_size",
    "tie_word_embeddings", "hidden_act", "sliding_window", "use_sliding_window", "max_window_layers",
    "attention_dropout", "bos_token_id", "eos_token_id", "pad_token_id", "layer_types", "head_dim",
    "attention_bias", "mlp_bias",
)


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    if not (path / "tokenizer.json").is_file() and not (path / "tokenizer_config.json").is_file():
        raise CheckpointError(f"no tokenizer files (tokenizer.json / tokenizer_config.json) in '{path}'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # a VITA config.json has model_type vita-Qwen2: harmless warning
        try:  # never the checkpoint's own code: without this, an auto_map would ask on stdin whether to run it
            tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
        except ValueError as exc:
            raise remote_code_error(path, "the tokenizer", exc) from None
        finally:
            hf_logging.set_verbosity(level)
    return tok


def remote_code_error(directory: Path, what: str, exc: Exception) -> Exception:
    """transformers' refusal to run a checkpoint's own Python code (``auto_map``), as a CheckpointError naming
    the file and the key; any other error is returned unchanged."""
    if "trust_remote_code" not in str(exc) and "custom code" not in str(exc):
        return exc
    found = []
    for name in ("tokenizer_config.json", "config.json"):
        try:
            auto_map = read_json(directory / name).get("auto_map") if (directory / name).is_file() else None
        except CheckpointError:
            auto_map = None
        if auto_map:
            found.append(f"'{directory / name}' has 'auto_map' {json.dumps(auto_map)}")
    where = "; ".join(found) or f"'{directory}' asks for custom code"
    return CheckpointError(
        f"{where}: loading {what} would run Python code shipped with the checkpoint, which vita_framework never "
        "does (trust_remote_code=False). Use a checkpoint transformers implements itself: set 'tokenizer_class' "
        "(tokenizer_config.json) or 'model_type' (config.json) to a built-in class such as Qwen2Tokenizer / "
        "qwen2 and remove 'auto_map'")


class CausalLMBackbone:
    """Tokenizer + causal LM; generation from ``inputs_embeds`` through ``GenerationMixin.generate``."""

    def __init__(self, model: Any, tokenizer: Any, generation_defaults: dict[str, Any]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.generation_defaults = generation_defaults
        self.hidden_size = int(model.config.hidden_size)
        self._embed = model.get_input_embeddings()

    @classmethod
    def from_options(cls, options: Any, context: Any, *, arch_name: str,
                     random_config: dict[str, Any]) -> CausalLMBackbone:
        """The LLM tensors of the bundle (all keys outside the encoder prefixes), or random init."""
        bundle = context.checkpoint
        tok_dir = Path(options.tokenizer) if options.tokenizer else (
            bundle.path if bundle is not None else default_bundle_path())
        tokenizer = load_tokenizer(tok_dir)
        config_cls, model_cls = transformers_classes(arch_name)
        if bundle is not None:
            raw = {k: v for k, v in bundle.config.items() if k in LLM_CONFIG_KEYS}
            if "rope_scaling" in raw and raw["rope_scaling"] is None:
                raw.pop("rope_scaling")
            ckpt_vocab = raw.get("vocab_size")
        else:
            raw = {k: v for k, v in random_config.items() if v is not None}
            ckpt_vocab = None
        vocab = len(tokenizer)
        if ckpt_vocab is not None and ckpt_vocab < vocab:
            raise CheckpointError(
                f"'{bundle.path / 'config.json'}' has vocab_size {ckpt_vocab} but the tokenizer has {vocab} "
                "tokens; the tokenizer does not belong to this checkpoint"
            )
        if bundle is not None or not raw.get("vocab_size"):
            raw["vocab_size"] = vocab  # as the reference's loader: resize_token_embeddings(len(tokenizer))
        elif raw["vocab_size"] < vocab:
            raise ComponentConfigError(f"llm vocab_size={raw['vocab_size']} is smaller than the tokenizer's {vocab} "
                                       "tokens; raise it or leave it null (the tokenizer's length)")
        with warnings.catch_warnings():  # build time, not the generation thread
            warnings.simplefilter("ignore", FutureWarning)
            config = config_cls(**raw, attn_implementation=options.attn_implementation)
        dtype = torch_dtype(context.dtype)
        if bundle is not None:
            from accelerate import init_empty_weights

            # parameters on meta (the bundle's tensors are assigned in), buffers real: transformers computes
            # the non-persistent rotary inv_freq itself, as checkpoints do not hold it
            with init_empty_weights(include_buffers=False):
                model = model_cls(config)
            state = unclaimed_state(bundle, context)
            for key in ("model.embed_tokens.weight", "lm_head.weight"):
                if key in state and state[key].shape[0] > vocab:
                    state[key] = state[key][:vocab]
            if config.tie_word_embeddings and "lm_head.weight" not in state and "model.embed_tokens.weight" in state:
                state["lm_head.weight"] = state["model.embed_tokens.weight"]
            load_into(model, state, what=f"LLM ({arch_name}) from '{bundle.path}'", context=context)
            if config.tie_word_embeddings:
                model.tie_weights()
        else:
            warnings.warn(f"LLM '{arch_name}' has RANDOM weights (no checkpoint given)", stacklevel=2)
            model = model_cls(config)
        if options.device_map:
            model = dispatch(model, options.device_map, dtype, getattr(options, "max_memory", None))
        else:
            model.to(device=context.device, dtype=dtype)
        quantize(model, getattr(options, "quantization", None), device=context.device, dtype=context.dtype, what="llm")
        model.eval()
        defaults = dict(bundle.generation_config) if bundle is not None else {}
        return cls(model, tokenizer, defaults)

    @classmethod
    def from_pretrained_dir(cls, options: Any, context: Any) -> CausalLMBackbone:
        """A standard transformers checkpoint directory (config.json + safetensors), never remote code."""
        from transformers import AutoModelForCausalLM

        base = context.checkpoint.path if context.checkpoint is not None else Path.cwd()
        model_dir = resolve_local_dir(options.model, base=base, what="llm.model")
        tokenizer = load_tokenizer(Path(options.tokenizer) if options.tokenizer else model_dir)
        dtype = torch_dtype(context.dtype)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=dtype, attn_implementation=options.attn_implementation,
                device_map=options.device_map, max_memory=parse_max_memory(getattr(options, "max_memory", None)),
                trust_remote_code=False)
        except (OSError, ValueError) as exc:
            error = remote_code_error(model_dir, "llm.model", exc)
            if isinstance(error, CheckpointError):
                raise error from None
            raise CheckpointError(f"llm.model '{model_dir}' cannot be loaded as a causal LM: {exc}") from None
        if options.arch and not type(model).__name__.startswith(options.arch):
            raise ComponentConfigError(
                f"llm.arch={options.arch} but '{model_dir}' holds a {type(model).__name__}; "
                "drop llm.arch or point llm.model at a matching checkpoint")
        vocab = model.get_input_embeddings().weight.shape[0]
        if len(tokenizer) > vocab:
            raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but '{model_dir}' embeds only {vocab}")
        if not options.device_map:
            model.to(context.device)
        quantize(model, getattr(options, "quantization", None), device=context.device, dtype=context.dtype, what="llm")
        gen_file = model_dir / "generation_config.json"
        defaults = read_json(gen_file) if gen_file.is_file() else {}
        return cls(model.eval(), tokenizer, defaults)

    # -- interface -----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self._embed.weight.device

    @property
    def context_length(self) -> int | None:
        value = getattr(self.model.config, "max_position_embeddings", None)
        return int(value) if isinstance(value, int) and value > 0 else None

    def checkpoint_state(self) -> dict[str, Any]:
        return dict(self.model.state_dict())

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self._embed(input_ids.to(self.device))

    def prefill_pruning_layer(self, layer: int | None) -> int:
        """FastV-style pruning (``FusedInputs.pruning``, :mod:`vita_framework.prefill_pruning`) is possible here:
        the layer ``layer`` resolves to, or a ConfigError naming ``llm.attn_implementation`` / ``fusion.layer``."""
        from .prefill_pruning import check_pruning

        return check_pruning(self.model, layer)

    def generation_config(self, options: dict[str, Any]) -> Any:
        """Our ``generation`` group merged over the checkpoint's generation_config.json."""
        from transformers import GenerationConfig

        merged = merge_generation_options(self.generation_defaults, options)
        eos = merged.get("eos_token_id", self.tokenizer.eos_token_id)
        eos = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        for token in options.get("stop_tokens") or []:
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == self.tokenizer.unk_token_id:
                raise ConfigError(f"generation.stop_tokens: '{token}' is not a single token of this tokenizer")
            if token_id not in eos:
                eos.append(token_id)
        merged["eos_token_id"] = eos
        if merged.get("pad_token_id") is None:
            pad = self.tokenizer.pad_token_id
            merged["pad_token_id"] = pad if pad is not None else (eos[0] if eos else 0)
        # generate() returns sequences and scores; output_scores without it makes transformers warn
        merged["return_dict_in_generate"] = True
        return GenerationConfig(**merged)

    @torch.inference_mode()
    def generate(self, fused: Any, generation_config: Any, *, streamer: Any = None, seed: int | None = None,
                 cancel: threading.Event | None = None) -> Any:
        """Penalty and sampling run as our own logits processors (see :mod:`vita_framework.decoding`): the
        penalty covers every generated token of every row, and sampling draws from a generator of this call
        (``seed``, or fresh entropy when None), never from the global torch RNG. Non-finite first-step logits
        raise :class:`GenerationError`; setting ``cancel`` ends generation after the current step, every row
        keeping what it has (shorter rows, no error)."""
        from transformers import StoppingCriteriaList

        from .decoding import CancelCriteria, FiniteLogitsCheck, decoding_plan

        config, processors, sampler = decoding_plan(generation_config, self.model.generation_config, seed,
                                                    fused.inputs_embeds.device)
        processors.insert(0, FiniteLogitsCheck(f"the LLM ({type(self.model).__name__})"))
        stopping = StoppingCriteriaList([CancelCriteria(cancel)] if cancel is not None else [])
        extra = {"tokenizer": self.tokenizer} if getattr(config, "stop_strings", None) else {}  # stop_strings need it
        pruning = getattr(fused, "pruning", None)  # FastV prunes inside the prefill, so it runs the whole prefill
        if getattr(fused, "prefix", None) is not None and pruning is None:  # rows prefilled from shared prefix states
            from .prefix_cache import batch_cache

            cache = batch_cache(self.model, fused, fused.prefix, room=int(config.max_new_tokens or 0))
            if cache is not None:
                extra["cache"] = cache
        with _pruning_hooks(self.model, pruning, fused.attention_mask):
            out = self.model.generate(
                inputs_embeds=fused.inputs_embeds, attention_mask=fused.attention_mask,
                generation_config=config, logits_processor=processors, stopping_criteria=stopping,
                streamer=streamer, **extra,
            )
        if sampler is not None and sampler.scores is not None and out.scores is not None:
            out.scores = tuple(sampler.scores[:len(out.scores)])  # warped scores, not the one-hot draw
        return out


def _pruning_hooks(model: Any, pruning: Any, attention_mask: Any) -> Any:
    """The :class:`~vita_framework.prefill_pruning.PrefillPruner` of one call, or a no-op without pruning."""
    if pruning is None:
        import contextlib

        return contextlib.nullcontext()
    from .prefill_pruning import PrefillPruner

    return PrefillPruner(model, pruning, attention_mask)


def transformers_classes(arch: str | None) -> tuple[Any, Any]:
    """``Llama`` -> (LlamaConfig, LlamaForCausalLM), with an error listing a few valid names."""
    import transformers

    config_cls = getattr(transformers, f"{arch}Config", None) if arch else None
    model_cls = getattr(transformers, f"{arch}ForCausalLM", None) if arch else None
    if config_cls is None or model_cls is None:
        raise ComponentConfigError(
            f"llm.arch={arch!r} is not a transformers causal LM; use the class prefix, e.g. Llama, Mistral, "
            "Gemma2, Phi3, Qwen2 (transformers' <arch>ForCausalLM)")
    return config_cls, model_cls
