"""Quantization as configuration: torchao int8 / int4 on CPU answer like float32 in a fraction of the bytes;
modes a device cannot run are refused before loading, naming the option to change."""

from __future__ import annotations

import pytest

from conftest import build_cached

BASE = ["+vision=internvit", "+audio=none", "device=cpu"]


def _accuracy(pipe, examples):
    from vita_framework.request import Request
    from vita_training import synthetic

    requests = [Request(e.question, images=[e.image()]) for e in examples]
    rows = pipe.generate_batch(requests, batch_size=12, max_new_tokens=24).rows
    return sum(synthetic.is_correct(r.text, e.answer) for r, e in zip(rows, examples)) / len(examples)


def test_int8_and_int4_answer_like_float32_in_a_fraction_of_the_bytes():
    from vita_framework.quantization import weight_bytes
    from vita_training import synthetic

    examples = synthetic.examples("heldout", 12)  # benchmarks/quantization.py measures 200
    full = build_cached(*BASE)
    reference = _accuracy(full, examples)
    assert reference >= 10 / 12
    for mode, ratio in (("int8", 0.3), ("int4", 0.2)):
        pipe = build_cached(*BASE, f"llm.quantization={mode}")
        assert weight_bytes(pipe.llm.model) <= ratio * weight_bytes(full.llm.model), mode
        assert _accuracy(pipe, examples) >= reference - 1 / 12, mode
    layers = build_cached(*BASE, "llm.quantization=int4").llm.model.model.layers[0]
    assert type(layers.mlp.up_proj.weight).__name__ == "Int4OpaqueTensor"  # packed int4, CPU kernel
    assert type(build_cached(*BASE, "llm.quantization=int4").llm.model.lm_head.weight).__name__ == "Int8Tensor"


def test_modes_a_device_cannot_run_are_refused_before_loading():
    from vita_framework.config import compose
    from vita_framework.errors import QuantizationError, ValidationErrors
    from vita_framework.quantization import quantize
    from vita_framework.validation import validate_run

    with pytest.raises(ValidationErrors) as info:
        validate_run(compose([*BASE, "llm.quantization=bnb_nf4", "vision.quantization=bnb_int8"]),
                     request_inputs=False)
    text = str(info.value)
    assert "llm.quantization=bnb_nf4 uses bitsandbytes, which runs on CUDA only, and the device is cpu" in text
    assert "use llm.quantization=int8 or llm.quantization=int4" in text and "vision.quantization=bnb_int8" in text
    with pytest.raises(ValidationErrors, match="'int3' is not a quantization mode; use int8 or int4"):
        validate_run(compose([*BASE, "llm.quantization=int3"]), request_inputs=False)
    import torch

    with pytest.raises(QuantizationError, match="CUDA only"):
        quantize(torch.nn.Linear(32, 32), "bnb_int8", device="cpu", dtype="float32", what="audio")
    problems = __import__("vita_framework.quantization", fromlist=["x"]).mode_problems(
        "int4", key="llm.quantization", device="cuda", dtype="float16")
    assert problems and "needs dtype=bfloat16" in problems[0]
