"""Weight averaging (``average_from``, ``speech.average_from``): a stage ends on the mean of its later weights
(:mod:`vita_training.averaging`)."""

from __future__ import annotations

import pytest
import torch

import vita_framework


def test_average_from_names_the_first_averaged_step_and_refuses_what_is_not_a_fraction():
    from vita_framework.errors import ConfigError
    from vita_training.averaging import average_start

    assert average_start(None, 2000, "speech.average_from") is None
    assert average_start(0.5, 2000, "speech.average_from") == 1000 and average_start(0, 7, "x") == 0
    for bad in (1.0, -0.1, True, "half"):
        with pytest.raises(ConfigError, match=r"speech\.average_from must be null \(no averaging\) or a fraction "
                                              r"of the stage's steps in \[0, 1\)"):
            average_start(bad, 2000, "speech.average_from")


def test_a_stage_with_average_from_ends_on_the_mean_of_its_later_weights(monkeypatch):
    """``fit`` folds the weights after each step from ``average_start`` on into their mean and leaves the modules
    holding it; the steps before are left out (a spy records the weights the real average sees)."""
    from vita_training import averaging, fitting
    from vita_training.loop import Trainer

    pipe = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu"])
    trainer = Trainer(pipe, train_vision=False, train_projector=True, train_llm=False)
    seen = []

    class Spy(averaging.WeightAverage):
        def update(self, step):
            super().update(step)
            seen.append((step, [p.detach().clone() for p in self.params]))

    monkeypatch.setattr(fitting, "WeightAverage", Spy)
    lines = []
    history = fitting.fit(trainer, steps=4, images_per_step=2, questions_per_image=2, lr=1e-2, warmup_steps=1,
                          min_lr_ratio=0.1, weight_decay=0.0, grad_clip=1.0, log_every=2, eval_every=2,
                          log=lines.append, average_start=2)
    assert [step for step, _ in seen] == [0, 1, 2, 3]
    (_, third), (_, fourth) = seen[2:]
    for param, a, b in zip(trainer.parameters(), third, fourth, strict=True):
        assert not torch.equal(a, b)  # the weights moved between the two averaged steps
        torch.testing.assert_close(param.detach(), (a + b) / 2, rtol=1e-6, atol=1e-7)
    assert {k: v for k, v in history[-1].items() if k != "averaged_heldout_row_acc"} == {
        "stage": "answers", "step": 4, "averaged_steps": 2}
    assert 0 <= history[-1]["averaged_heldout_row_acc"] <= 1
    assert lines[-1].startswith("answers: weights averaged over the last 2 steps (from step 3)  heldout acc ")
