"""The speech stage's options: ``speech.distill`` (a spoken row's LLM states at its answer positions learn to match
the same question typed) and ``speech.learn_encoder`` (false: the whale's body keeps the speech warm-up's weights)."""

import pytest
import torch


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    import vita_framework
    from vita_training.speech import SpeechBank
    from vita_training.spoken import SpokenTrainer

    pipe = vita_framework.build(["+vision=internvit", "+audio=whale", "device=cpu"])
    trained = SpokenTrainer(pipe, SpeechBank(tmp_path_factory.mktemp("speech")))
    trained.set_mode(False)
    return trained


def _groups():
    from vita_training import synthetic

    return [synthetic.scene_examples("train", 5, 4), synthetic.scene_examples("train", 6, 4)]


def _typed(trainer, groups):
    """The rows all typed: the batch a spoken share of 0 gives."""
    share, distill = trainer.spoken_share, trainer.distill
    trainer.spoken_share, trainer.distill = 0.0, 0.0
    try:
        return trainer.batch(groups)
    finally:
        trainer.spoken_share, trainer.distill = share, distill


@pytest.mark.usefixtures("espeak")
def test_the_typed_twin_is_the_same_rows_typed_and_marks_the_spoken_ones(trainer):
    groups = _groups()
    trainer.spoken_share, trainer.distill = 0.5, 0.0
    assert trainer.batch(groups).teacher is None  # off: nothing extra is built
    trainer.distill = 1.0
    batch = trainer.batch(groups)
    typed = _typed(trainer, groups)
    assert torch.equal(batch.teacher.ids, typed.ids) and torch.equal(batch.teacher.targets, typed.targets)
    assert batch.teacher.audio is None and batch.audio is not None
    flags = [trainer.is_spoken(ex, j) for group in groups for j, ex in enumerate(group)]
    assert batch.spoken.tolist() == flags and 0 < sum(flags) < len(flags)
    def row_ids(b, row):  # without the padding
        return b.ids[row][: int(b.targets[row].nonzero().max()) + 1]

    for row, aloud in enumerate(flags):  # typed rows are laid out alike; spoken ones differ, answers the same
        assert torch.equal(row_ids(batch, row), row_ids(typed, row)) != aloud
        assert torch.equal(batch.ids[row][batch.targets[row]], typed.ids[row][typed.targets[row]])
    trainer.spoken_share = 0.0  # no spoken row: no audio and no twin
    assert trainer.batch(groups).teacher is None


@pytest.mark.usefixtures("espeak")
def test_distillation_adds_the_spoken_rows_state_gap_and_trains_the_encoder_through_it(trainer):
    import dataclasses

    from vita_training.loop import Trainer

    groups = _groups()
    trainer.spoken_share, trainer.distill = 0.5, 1.0
    batch = trainer.batch(groups)
    with torch.no_grad():
        plain, correct = Trainer.loss(trainer, batch)
        distilled, correct_too = trainer.loss(batch)
        trainer.distill = 3.0
        tripled, _ = trainer.loss(batch)
        # a typed batch as its own twin, every row marked spoken: every state matches, so the term is exactly 0
        typed = _typed(trainer, groups)
        twin = dataclasses.replace(typed, teacher=typed, spoken=torch.ones(typed.ids.shape[0], dtype=torch.bool))
        same, _ = trainer.loss(twin)
    assert torch.equal(correct, correct_too)
    gap = distilled.item() - plain.item()
    assert gap > 0.01  # an untrained encoder's spoken rows are far from the typed states
    assert tripled.item() - plain.item() == pytest.approx(3 * gap, rel=1e-4)
    assert same.item() == pytest.approx(Trainer.loss(trainer, typed)[0].item(), abs=1e-6)

    trainer.distill = 1.0
    trainer.learn(["audio"])  # the encoder alone: its only signal is through the spoken rows
    try:
        loss, _ = trainer.loss(batch)
        loss.backward()
        grads = [p.grad for p in trainer.audio.parameters() if p.requires_grad]
        assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    finally:
        for p in trainer.audio.parameters():
            p.grad = None
        trainer.learn([])
        trainer.spoken_share, trainer.distill = 0.0, 0.0


@pytest.mark.usefixtures("espeak")
def test_keeping_the_encoder_body_trains_the_adapter_and_the_llm_only(trainer):
    from vita_framework.errors import ConfigError
    from vita_training.spoken import freeze_encoder_body

    trainer.spoken_share, trainer.distill = 1.0, 0.0
    trainer.learn(["audio", "llm"])
    try:
        frozen = freeze_encoder_body(trainer.audio)
        names = dict(trainer.audio.named_parameters())
        assert frozen == sum(n.startswith("encoder.") for n in names) and frozen > 10
        assert {n.split(".")[0] for n, p in names.items() if p.requires_grad} == {"adpter"}
        assert all(p.requires_grad for p in trainer.llm.model.parameters())
        loss, _ = trainer.loss(trainer.batch(_groups()))
        loss.backward()
        assert all(p.grad is None for n, p in names.items() if n.startswith("encoder."))
        adapter = [p.grad for n, p in names.items() if n.startswith("adpter.")]
        assert adapter and all(g is not None and g.abs().sum() > 0 for g in adapter)
        learnt = [*trainer.llm.model.parameters(), *(p for n, p in names.items() if n.startswith("adpter."))]
        assert set(map(id, trainer.parameters())) == set(map(id, learnt))
    finally:
        for module in trainer.modules.values():
            for p in module.parameters():
                p.grad = None
        trainer.learn([])
        trainer.spoken_share = 0.0
    with pytest.raises(ConfigError, match=r"speech\.learn_encoder=false: the audio encoder has no 'encoder\.\*' "
                                          r"parameters.*set speech\.learn_encoder=true"):
        freeze_encoder_body(torch.nn.Linear(2, 2))
