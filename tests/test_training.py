"""Training pieces: the synthetic data, region labels, answer-only targets, prompts tokenised as generation
tokenises them, the untrained bundle's layout, the training entry end to end, and that inference never imports
the training package."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import vita_framework
from conftest import ROOT
from vita_framework.request import Request
from vita_framework.weights import default_bundle_path
from vita_training import scenes as scenes_module
from vita_training import synthetic


def test_examples_are_a_pure_function_of_split_and_index():
    a, b = synthetic.example("heldout", 7), synthetic.example("heldout", 7)
    assert a == b and a.image().tobytes() == b.image().tobytes()
    train = [synthetic.example("train", i).scene for i in range(50)]
    heldout = [synthetic.example("heldout", i).scene for i in range(50)]
    assert not set(train) & set(heldout)
    with pytest.raises(ValueError, match="unknown split 'test'; use one of train, heldout"):
        synthetic.example("test", 0)


def test_every_question_has_one_answer_read_from_the_scene():
    for index in range(40):
        scene = synthetic.example("train", index).scene
        assert len({s.kind for s in scene.shapes}) == len({s.colour for s in scene.shapes}) == len(scene.shapes)
        for question, answer, kind in synthetic.questions_for(scene):
            if kind == "shape":
                colour = question.removeprefix("What shape is ").rstrip("?")
                assert answer == next(s.kind for s in scene.shapes if s.colour == colour)
            elif kind == "count":
                assert answer == synthetic.NUMBERS[len(scene.shapes)]
    assert synthetic.is_correct(" A red circle. ", "a red circle")
    assert not synthetic.is_correct("a red circle and", "a red circle")


def test_region_labels_mark_the_cells_under_each_shape():
    colours, places = sorted(synthetic.COLOURS), sorted(synthetic.POSITIONS)
    for index in range(30):
        scene = synthetic.example("train", index).scene
        labels = scene.region_labels(7)
        assert len(labels) == 49
        width, height = scene.canvas()
        for shape in scene.shapes:
            label = (synthetic.SHAPES.index(shape.kind) + 1, colours.index(shape.colour) + 1,
                     places.index(shape.position) + 1)
            if shape.diameter * min(width, height) < 40:  # smaller than a cell and a half: may cover none fully
                continue
            assert label in labels, (index, shape)  # its kind shows where its edges are
            # every cell it covers (inside ones too, whose kind is UNSEEN): edges alone can sit lopsided when
            # the shape's sides run along cell boundaries
            cells = [k for k, got in enumerate(labels) if got[1:] == label[1:]]
            assert all(labels[k][0] in (label[0], synthetic.UNSEEN) for k in cells)
            row = sum(k // 7 for k in cells) / len(cells)
            col = sum(k % 7 for k in cells) / len(cells)
            # the labelled cells sit where the shape is, in the square tile the canvas is resized to (a triangle's
            # area lies off the centre of its circle, towards its base: compare with the mean of its corners)
            corners = [(shape.centre[0] * width, shape.centre[1] * height)] if shape.kind == "circle" else \
                scenes_module._points(shape, width, height)
            x = sum(p[0] for p in corners) / len(corners) / width
            y = sum(p[1] for p in corners) / len(corners) / height
            assert abs((col + 0.5) / 7 - x) < 0.1 and abs((row + 0.5) / 7 - y) < 0.1, (index, shape)


def test_interior_kind_labels_every_cell_a_shape_covers_with_its_kind():
    # a big filled shape alone: many cells lie wholly inside it, where no edge is in view
    scene = next(s for s in (synthetic.example("train", i).scene for i in range(400))
                 if len(s.shapes) == 1 and s.shapes[0].diameter > 0.6)
    kind = synthetic.SHAPES.index(scene.shapes[0].kind) + 1
    edges_only, every = scene.region_labels(7), scene.region_labels(7, interior_kind=True)
    inside = [k for k, label in enumerate(edges_only) if label[0] == synthetic.UNSEEN]
    assert len(inside) >= 4
    assert all(every[k][0] == kind for k in inside)
    # colour and position labels, and every cell off the interior, are the same either way
    assert all(a[1:] == b[1:] for a, b in zip(edges_only, every))
    assert all(edges_only[k] == every[k] for k in range(49) if k not in inside)


def test_padded_region_labels_follow_the_tile_a_padding_tower_sees():
    """With ``padded`` the labels are those of the canvas centred on a square: the bands hold no shape, and each
    shape's cells sit where padding puts it; a square canvas is labelled alike either way."""
    scenes = [synthetic.example("train", i).scene for i in range(200)]
    wide = next(s for s in scenes if s.aspect > 1.7 and any(sh.diameter * min(s.canvas()) >= 40 for sh in s.shapes))
    tall = next(s for s in scenes if s.aspect < 0.6 and any(sh.diameter * min(s.canvas()) >= 40 for sh in s.shapes))
    square = next(s for s in scenes if s.aspect == 1.0)
    assert square.region_labels(7, padded=True) == square.region_labels(7)
    for scene in (wide, tall):
        labels = scene.region_labels(7, padded=True)
        assert labels != scene.region_labels(7)
        width, height = scene.canvas()
        side = max(width, height)
        band = (side - min(width, height)) / 2 / side * 7  # cells of padding on each side, across the short axis
        empty = [k for k in range(49) if ((k // 7 if width > height else k % 7) + 1 <= band - 0.1
                                          or (k // 7 if width > height else k % 7) >= 7 - band + 0.1)]
        assert empty and all(labels[k] == (0, 0, 0) for k in empty)
        colours, places = sorted(synthetic.COLOURS), sorted(synthetic.POSITIONS)
        for shape in scene.shapes:
            if shape.diameter * min(width, height) < 40:
                continue
            label = (synthetic.SHAPES.index(shape.kind) + 1, colours.index(shape.colour) + 1,
                     places.index(shape.position) + 1)
            cells = [k for k, got in enumerate(labels) if got == label]
            x = ((side - width) / 2 + shape.centre[0] * width) / side  # the centre in the padded square
            y = ((side - height) / 2 + shape.centre[1] * height) / side
            col, row = sum(k % 7 for k in cells) / len(cells), sum(k // 7 for k in cells) / len(cells)
            assert abs((col + 0.5) / 7 - x) < 0.1 and abs((row + 0.5) / 7 - y) < 0.1


def test_scenes_vary_as_user_drawings_do_and_answers_stay_unambiguous():
    scenes = [synthetic.example("train", i).scene for i in range(400)]
    shapes = [s for scene in scenes for s in scene.shapes]
    assert {len(scene.shapes) for scene in scenes} == {1, 2, 3, 4}
    assert min(s.diameter for s in shapes) < 0.2 and max(s.diameter for s in shapes) > 0.8  # small to filling
    assert any(s.outline for s in shapes) and any(not s.outline for s in shapes)
    assert len({round(s.angle, 1) for s in shapes if s.kind != "circle"}) > 40
    assert any(scene.jpeg for scene in scenes) and any(scene.noise for scene in scenes)
    assert min(sc.aspect for sc in scenes) < 0.7 and max(sc.aspect for sc in scenes) > 1.4
    assert len({scene.background for scene in scenes}) > 200
    for scene in scenes:
        width, height = scene.canvas()
        for i, a in enumerate(scene.shapes):
            assert synthetic.position_of(a.centre) == a.position  # the answer follows from where it is drawn
            r = a.diameter * min(width, height) / 2
            assert r <= a.centre[0] * width <= width - r and r <= a.centre[1] * height <= height - r  # inside
            for b in scene.shapes[i + 1:]:  # apart
                rb = b.diameter * min(width, height) / 2
                gap = ((a.centre[0] - b.centre[0]) * width) ** 2 + ((a.centre[1] - b.centre[1]) * height) ** 2
                assert gap ** 0.5 > r + rb
    image = scenes[0].render()
    assert image.size == scenes[0].canvas() and image.mode == "RGB"


def test_heldout_scenes_use_settings_training_never_sees():
    train = synthetic.TRAIN_STYLE
    heldout = [synthetic.example("heldout", i).scene for i in range(300)]
    drawn = [s for s in heldout if s.background != (255, 255, 255)]
    assert all(s.aspect == 1.0 or not any(lo <= s.aspect <= hi for lo, hi in train.aspects) for s in drawn)
    # every held-out canvas ratio lies between two trained ones (training spans 1:2 to 2:1), tall and wide alike
    assert min(lo for lo, _ in train.aspects) == 0.5 and max(hi for _, hi in train.aspects) == 2.0
    ratios = [s.aspect for s in drawn if s.aspect != 1.0]
    assert min(ratios) < 0.65 and max(ratios) > 1.6 and all(0.5 < r < 2.0 for r in ratios)
    assert all(s.jpeg is None or s.jpeg < train.jpeg[0] for s in heldout)
    # a user's first try is drawn with no noise draw at all (noise_seed 0); a drawn scene may be white too
    users = [s for s in heldout if s.background == (255, 255, 255) and len(s.shapes) == 1 and s.noise_seed == 0]
    assert len(users) > 20 and all(s.shapes[0].position == "center" and s.shapes[0].diameter >= 0.45 for s in users)
    assert synthetic.position_of((0.5, 0.5)) == "center" and synthetic.position_of((0.1, 0.45)) == "left"
    assert synthetic.position_of((0.6, 0.95)) == "bottom" and synthetic.position_of((0.75, 0.3)) == "right"


def test_accuracy_by_canvas_scores_squashed_canvases_apart():
    from vita_training import report

    examples = synthetic.examples("heldout", 60)
    canvases = [report.canvas_of(e.scene) for e in examples]
    assert set(canvases) == {"square", "tall", "wide"}
    assert all((c == "tall") == (e.scene.aspect < 1) for e, c in zip(examples, canvases))
    texts = [e.answer if c != "tall" else "no" for e, c in zip(examples, canvases)]
    texts[canvases.index("wide")] = "wrong"
    table = report.by_canvas(examples, texts)
    assert {c: table[c]["questions"] for c in table} == {c: canvases.count(c) for c in ("square", "tall", "wide")}
    assert table["square"]["all"] == 1.0 and table["tall"]["all"] == 0.0
    assert table["wide"]["all"] == round(1 - 1 / canvases.count("wide"), 4)
    kinds = [e.kind for e, c in zip(examples, canvases) if c == "square"]
    assert all(table["square"][k] == (1.0 if k in kinds else None) for k in synthetic.QUESTION_KINDS)
    with pytest.raises(ValueError, match="2 answers for 60 questions"):
        report.by_canvas(examples, texts[:2])


def test_pixel_shuffle_keeps_regions_in_row_major_order():
    from vita_framework.ops import pixel_shuffle

    side = 14
    ys, xs = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    features = torch.stack([ys, xs], dim=-1).reshape(1, side * side, 2).float()  # each patch carries (y, x)
    shuffled = pixel_shuffle(features, 0.5).reshape(side // 2 * side // 2, 4, 2)
    for token in range(shuffled.shape[0]):
        assert set(shuffled[token, :, 0].tolist()) == {2 * (token // 7), 2 * (token // 7) + 1}
        assert set(shuffled[token, :, 1].tolist()) == {2 * (token % 7), 2 * (token % 7) + 1}


@pytest.fixture(scope="module")
def trainer():
    from vita_training.loop import Trainer

    pipe = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu"])
    return Trainer(pipe)


def test_loss_targets_are_the_answer_tokens_and_im_end_only(trainer):
    groups = [synthetic.scene_examples("heldout", i, 3) for i in range(3)]
    batch = trainer.batch(groups)
    tokenizer = trainer.tokenizer
    rows = [ex for group in groups for ex in group]
    assert batch.image_of_row == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for r, ex in enumerate(rows):
        target_ids = batch.ids[r][batch.targets[r]].tolist()
        assert target_ids[-1] == trainer.end_id
        assert tokenizer.decode(target_ids[:-1]) == ex.answer
    assert trainer.check_shared_prefix(batch) < 1e-4
    loss, correct = trainer.loss(batch)
    assert loss.requires_grad and correct.shape == (9,)


def test_length_buckets_cut_where_padding_is_saved():
    from vita_training.buckets import length_buckets

    # 12 one-word rows (5 tokens) and 4 descriptions (20): two buckets compute 12x5 + 4x20 = 140 tokens, not 320
    lengths = [5, 20, 5, 5, 20, 5, 5, 5, 20, 5, 5, 5, 5, 20, 5, 5]
    buckets = length_buckets(lengths, overhead=10)
    assert buckets == [[0, 2, 3, 5, 6, 7, 9, 10, 11, 12, 14, 15], [1, 4, 8, 13]]
    assert length_buckets(lengths, overhead=1000) == [list(range(16))]  # not worth a second forward
    assert length_buckets([3, 9, 27], most=3, overhead=0) == [[0], [1], [2]]
    assert length_buckets([7, 7, 7], overhead=0) == [[0, 1, 2]]


def test_bucketed_forward_gives_the_plain_forwards_loss_and_gradients(trainer):
    from vita_training.buckets import length_buckets

    groups = [synthetic.scene_questions("train", i, 8) for i in range(16)]  # a training step's 128 rows
    batch = trainer.batch(groups)
    assert trainer.lengths(batch) is None  # length_buckets 1 (the default): one segment
    trainer.length_buckets = 3
    lengths = trainer.lengths(batch)
    assert len(set(lengths)) > 2 and max(lengths) == batch.ids.shape[1]
    offset = trainer.prefix_len + trainer.image_rows
    assert len(length_buckets([n - offset for n in lengths])) > 1  # the batch really is bucketed
    params = trainer.parameters()
    results = []
    for shared in (True, False):
        loss, correct = trainer.loss(batch, shared_prefix=shared)
        grads = torch.autograd.grad(loss, params)
        results.append((loss.item(), correct, grads))
    trainer.length_buckets = 1
    (bucketed, c1, g1), (plain, c2, g2) = results
    assert bucketed == pytest.approx(plain, rel=1e-5) and torch.equal(c1, c2)
    # relative to each gradient's norm; a key projection's bias gets none in exact arithmetic (softmax ignores a
    # shift shared by every key), so its float noise (~1e-9) is left out
    gaps = [((a - b).norm() / b.norm()).item() for a, b in zip(g1, g2) if b.norm() > 1e-6]
    assert len(gaps) >= len(g2) - 4 and max(gaps) < 1e-4


def test_prefetched_batches_are_the_batches_made_in_order(trainer):
    """A worker process makes the same batches, in step order, as the training process would (the warm-up's
    rendered scenes and region labels, the answer stage's laid-out rows)."""
    from vita_training.prefetch import batches
    from vita_training.warmup import region_batch

    def regions(step):
        return region_batch(trainer, step * 3, 3, interior_kind=True)

    def rows(step):
        return trainer.batch([synthetic.scene_examples("train", step * 2 + i, 4) for i in range(2)])

    for make in (regions, rows):
        here, ahead = list(batches(make, 5)), list(batches(make, 5, workers=1))
        assert len(ahead) == 5
        for mine, theirs in zip(here, ahead):
            if make is regions:
                assert torch.equal(mine[0], theirs[0]) and torch.equal(mine[1], theirs[1]) and mine[2] == theirs[2]
            else:
                assert torch.equal(mine.ids, theirs.ids) and torch.equal(mine.pixel_values, theirs.pixel_values)
                assert torch.equal(mine.targets, theirs.targets) and mine.image_of_row == theirs.image_of_row
    draws = []  # workers leave the global RNG alone, so what is drawn after a stage (the speech warm-up's head)
    for workers in (0, 1):  # is the same with or without them
        torch.manual_seed(7)
        list(batches(rows, 2, workers=workers))
        draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1])


def test_training_prompts_are_the_ids_generation_prepares(trainer):
    pipe = trainer.pipe
    image_id = pipe.placeholder_ids["image"]
    for index in range(5):  # every question kind, asked about a one-tile image
        scene = synthetic.example("heldout", index).scene
        for question, _, _ in synthetic.questions_for(scene):
            prepared = pipe.prepare(Request(question, images=[scene.render()]))
            assert trainer.prompt_ids(question) == prepared.input_ids, question
    trainer.check_prompt(synthetic.example("heldout", 0))
    ids = trainer.prompt_ids(synthetic.DESCRIBE)
    assert ids.count(image_id) == trainer.tokens_per_tile and ids.index(image_id) == trainer.prefix_len


def test_region_batch_labels_every_image_token(trainer):
    from vita_training.warmup import region_batch

    pixels, labels, scenes = region_batch(trainer, 0, 2)
    assert len(scenes) == 2 and region_batch(trainer, 5, 1, pool=4)[2][0] == synthetic.example("train", 1).scene
    assert pixels.shape[0] == 2 and labels.shape == (2, trainer.tokens_per_tile, 3)
    on_shape = labels[..., 1] > 0
    assert on_shape.any() and (on_shape == (labels[..., 2] > 0)).all()
    kinds = labels[..., 0][on_shape]  # a kind, or UNSEEN inside a shape (no edge in view)
    assert ((kinds > 0) | (kinds == synthetic.UNSEEN)).all() and (labels[..., 0][~on_shape] == 0).all()


def test_training_entry_writes_a_bundle_the_loader_reads(tmp_path, run_env, espeak):
    """The shipped recipe's stages, each for two steps: tower warm-up, answers, speech warm-up, spoken questions;
    the bundle loads back with its whale encoder, and every stage shows a progress bar and logs its steps."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "vita_framework.train", "vision_warmup.steps=2", "vision_warmup.images_per_step=2",
           "steps=2", "images_per_step=2", "questions_per_image=2", "speech.steps=2", "speech.images_per_step=2",
           "speech.questions_per_image=2", "speech.warmup.steps=2", "speech.warmup.clips=4", "heldout=4",
           "log_every=1", "eval_every=0", "arch.vision_layers=1", "arch.llm_layers=1", "speech.arch.num_blocks=1",
           "speech.average_from=0.5", "speech.threads=2", "speech.workers=1", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=run_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for line in ("vision step     2", "\nstep     2  shapes<=", "speech warm-up step     2", "speech step     2"):
        assert line in proc.stderr and line.strip() in (out / "vita_train.log").read_text()  # logged, both places
    for bar in ("vision warm-up: 100%", "answers: 100%", "speech warm-up: 100%", "speech: 100%",
                "scoring 4 held-out: 100%", "scoring 4 spoken held-out: 100%"):
        assert bar in proc.stderr, bar
    info = json.loads((out / "bundle" / "bundle_info.json").read_text())
    assert info["weights"] == "trained" and info["data"] == synthetic.DATA_VERSION and info["seed"] == 0
    assert info["train_config"]["steps"] == 2 and info["heldout_questions"] == 4
    assert info["spoken_voice"] == "en-029+f4/150/55" and "spoken_accuracy" in info
    by_canvas = info["heldout_accuracy_by_canvas"]
    assert sorted(by_canvas) == ["spoken", "typed"] and sum(r["questions"] for r in by_canvas["typed"].values()) == 4
    stages = [h["stage"] for h in json.loads((out / "history.json").read_text())]
    # the 3rd speech warm-up record: the held-out voice; the 3rd speech one: the weights averaged over its last step
    assert stages == ["vision"] * 2 + ["answers"] * 2 + ["speech_warmup"] * 3 + ["speech"] * 3
    assert "speech: weights averaged over the last 1 steps (from step 2)" in proc.stderr
    assert "speech warm-up: the held-out voice (en-029+f4/150/55) asks " in proc.stderr
    assert "speech: 2 torch threads (speech.threads)" in proc.stderr and info["torch_threads"] == 1
    assert not (out / "bundle.init").exists()
    config = json.loads((out / "bundle" / "config.json").read_text())
    assert config["mm_audio_encoder"] == "audio-encoder-tiny"
    assert (out / "bundle" / "InternViT-tiny" / "preprocessor_config.json").read_text().count('"max_patches": 1')
    pipe = vita_framework.build(["+vision=internvit", "+audio=whale", f"checkpoint={out / 'bundle'}"])
    assert pipe.vision.image_size == 112 and pipe.llm.model.config.num_hidden_layers == 1
    assert len(pipe.audio.encoder.enc[1].encoders) == 1 and pipe.audio.encoder.global_cmvn.istd.min() > 0
    example = synthetic.example("heldout", 0)
    result = pipe.generate(synthetic.DESCRIBE, images=[example.image()], max_new_tokens=3)
    assert len(result.rows[0].generated_ids) <= 3
    from vita_training.speech import HELDOUT_VOICE, SAMPLE_RATE, SpeechBank

    clip = SpeechBank(tmp_path / "speech").waveform(example.question, HELDOUT_VOICE)
    spoken = pipe.generate("", images=[example.image()], audios=[(clip, SAMPLE_RATE)], max_new_tokens=3)
    assert spoken.rows[0].tokens_in["audio"] > 5


def test_random_bundle_script_writes_the_shipped_layout(tmp_path, run_env):
    """``--random`` writes the trainer's starting point: the shipped bundle's tokenizer, configs and tensor names
    and shapes exactly (the vision tower in the reference's names, from the component's checkpoint_state)."""
    from safetensors.torch import load_file

    out = tmp_path / "random"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "build_default_bundle.py"), "--random",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, env=run_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shipped = default_bundle_path()
    for name in ("tokenizer.json", "generation_config.json", "InternViT-tiny/config.json",
                 "InternViT-tiny/preprocessor_config.json"):
        assert (out / name).read_text() == (shipped / name).read_text(), name
    # the trainer adds the whale encoder (its directory, its tensors) to this starting point
    config = json.loads((shipped / "config.json").read_text())
    assert config.pop("mm_audio_encoder") == "audio-encoder-tiny"
    assert json.loads((out / "config.json").read_text()) == config

    def shapes(bundle):
        return {key: tuple(t.shape) for key, t in load_file(str(bundle / "model.safetensors")).items()
                if not key.startswith("model.audio_encoder.")}

    assert shapes(out) == shapes(shipped)
    assert "model.vision_tower.vision_tower.encoder.layers.0.attn.qkv.weight" in shapes(out)
    info = json.loads((out / "bundle_info.json").read_text())
    assert info["weights"] == "random" and not (tmp_path / "random.tokenizer").exists()
    pipe = vita_framework.build(["+vision=internvit", "+audio=none", "device=cpu", f"checkpoint={out}"])
    result = pipe.generate(synthetic.DESCRIBE, images=[synthetic.example("heldout", 0).image()], max_new_tokens=2)
    assert len(result.rows[0].generated_ids) <= 2


def test_inference_never_imports_the_training_package(tmp_path, run_env):
    """The default command (plugins, build, generation, result) runs without importing ``vita_training``."""
    cmd = [sys.executable, "-X", "importtime", "-m", "vita_framework", "+vision=internvit", "+audio=none",
           "device=cpu", "generation.max_new_tokens=2", f"hydra.run.dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=run_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "vita_framework.pipeline" in imported and "vita_plugins.vision.internvit.model" in imported
    assert [m for m in imported if m.startswith("vita_training")] == []
    assert (tmp_path / "result.json").is_file()
