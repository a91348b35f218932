"""The teacher-output cache (kdlab.methods.teacher_cache, trainer.teacher_cache).

The promise: the cached run trains the same student, bit for bit on CPU with the same seed, as the
uncached one, for output (KD), feature (hints) and input-Jacobian terms; a changed teacher or subset
is another cache; unsafe configurations are refused (``on``) or left uncached (``auto``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlab.config import ConfigError
from kdlab.data import make_loader
from kdlab.engine import save_classifier
from kdlab.methods import METHODS
from kdlab.models import build_model
from kdlab.runner import datasets_for, load_run_config, train

# 130 rows in batches of 32: four full batches and a partial one of 2 (its own table)
DATA = {"n_per_class": 13, "batch_size": 32, "val_size": 100, "max_test": 200}
STUDENT = {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}
TERMS = {
    "kd": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}},
    "hints": {"ce": {"weight": 1.0}, "hints": {"weight": 0.5, "layers": [["conv2", "conv2"]]}},
    "jacobian": {"ce": {"weight": 1.0}, "jacobian": {"weight": 1.0, "select": "top"}},
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[8, 16], fc=64)
    return save_classifier(net, tmp_path_factory.mktemp("t") / "teacher.safetensors", data="fashion-mnist")


def _cfg(make_config, teacher: Path, name: str, terms: str = "kd", overrides=(), **trainer):
    return load_run_config([make_config(
        name=name, method="distill", teacher={"checkpoint": str(teacher)}, data=DATA, model=STUDENT,
        objective={"student": TERMS[terms]}, trainer={"epochs": 2, **trainer})], list(overrides))


@pytest.mark.parametrize("terms", sorted(TERMS))
def test_exact_cached_student_is_bit_identical(make_config, teacher, terms):
    off = train(_cfg(make_config, teacher, f"{terms}-off", terms, teacher_cache="off"))
    on = train(_cfg(make_config, teacher, f"{terms}-on", terms, teacher_cache="on", teacher_cache_exact=True))
    a, b = load_file(off / "student.safetensors"), load_file(on / "student.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    summary = json.loads((on / "summary.json").read_text())
    assert summary["teacher_cache"]["location"] == "memory"
    assert summary["teacher_cache"]["batch_sizes"] == [32, 2]
    assert json.loads((off / "summary.json").read_text())["teacher_cache"]["location"] is None


def test_lookup_equals_the_teacher_on_each_row(make_config, teacher):
    """An independent recomputation: the teacher's logits and Jacobian rows, one example at a time."""
    cfg = _cfg(make_config, teacher, "rows", "jacobian")
    data = datasets_for(cfg)
    from kdlab.data import transfer_info
    from kdlab.engine import make_fabric

    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    method.setup(make_fabric(cfg.trainer))
    method.on_fit_start(data.transfer, Path(cfg.out_dir) / cfg.name, [32, 2])
    method.teacher_cache = method._prebuild_cache()
    net = method.frozen["teacher"]
    idx = torch.tensor([0, 7, 129, 64])
    got = method.teacher_cache.lookup(idx, torch.zeros(4))
    for i, row in enumerate(idx.tolist()):
        x = data.transfer[row][0].unsqueeze(0).requires_grad_(True)
        logits = net(x)
        (g,) = torch.autograd.grad(logits[0, logits.argmax()], x)
        assert torch.allclose(got.out[i], logits[0].detach(), atol=1e-5)
        assert torch.allclose(got.derived["jacobian/jacobian"][i, 0], g.flatten(), atol=1e-5)


def test_shared_cache_is_reused_and_invalidated(make_config, teacher, tmp_path):
    shared = tmp_path / "shared"
    first = train(_cfg(make_config, teacher, "a", teacher_cache_dir=str(shared)))
    again = train(_cfg(make_config, teacher, "b", teacher_cache_dir=str(shared)))
    s1 = json.loads((first / "summary.json").read_text())["teacher_cache"]
    s2 = json.loads((again / "summary.json").read_text())["teacher_cache"]
    assert s1["location"] == s2["location"] and s2.get("reused") is True and not s1.get("reused")
    # another subset and other teacher weights: new keys, new directories
    train(_cfg(make_config, teacher, "c", overrides=["data.subset_seed=1"], teacher_cache_dir=str(shared)))
    torch.manual_seed(1)
    other = save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[8, 16], fc=64),
                            tmp_path / "other.safetensors", data="fashion-mnist")
    train(_cfg(make_config, other, "d", teacher_cache_dir=str(shared)))
    assert len([p for p in shared.iterdir() if p.is_dir()]) == 3


def test_large_cache_spills_to_the_run_directory(make_config, teacher):
    run = train(_cfg(make_config, teacher, "spill", teacher_cache_memory_mb=0))
    where = json.loads((run / "summary.json").read_text())["teacher_cache"]["location"]
    assert Path(where).parent == run / "teacher_cache"
    assert (Path(where) / "meta.json").is_file()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_falls_back_with_a_warning(make_config, teacher, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.warns(UserWarning, match="not writable"):
            run = train(_cfg(make_config, teacher, "ro", teacher_cache_dir=str(ro / "cache")))
    finally:
        ro.chmod(0o700)
    assert json.loads((run / "summary.json").read_text())["teacher_cache"]["location"] == "memory"


def test_unwritable_directory_falls_back_file_in_the_way(make_config, teacher, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="not writable"):
        run = train(_cfg(make_config, teacher, "blocked", teacher_cache_dir=str(blocker / "cache")))
    assert json.loads((run / "summary.json").read_text())["teacher_cache"]["location"] == "memory"


@pytest.mark.parametrize("change, words", [
    ({"data": {"augment": True}}, "data.augment"),
    ({"players": {"input_noise": 0.1}}, "players.input_noise"),
    ({"objective": {"student": {"attention_jacobian": {"weight": 1.0, "layers": [["conv2", "conv2"]]}}}}, "attention_jacobian"),
])
def test_unsafe_configurations_are_refused_when_on_and_skipped_when_auto(make_config, teacher, change, words):
    base = make_config(name="u", method="distill", teacher={"checkpoint": str(teacher)}, data=DATA, model=STUDENT,
                       objective={"student": TERMS["kd"]})
    for section, values in change.items():
        base[section] = {**base.get(section, {}), **values}
    cfg = load_run_config([base], ["trainer.teacher_cache=on"])
    data = datasets_for(cfg)
    from kdlab.data import transfer_info

    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    cfg = load_run_config([base], ["trainer.teacher_cache=auto"])
    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    assert any(words in why for why in method.cache_blockers)


def test_methods_whose_teacher_trains_refuse_on(make_config, teacher):
    cfg = load_run_config([make_config(name="k", method="kdgan", teacher={"checkpoint": str(teacher)}, data=DATA,
                                       trainer={"teacher_cache": "on"})])
    data = datasets_for(cfg)
    with pytest.raises(ConfigError, match="teacher_cache=on: method 'kdgan'"):
        METHODS.get("kdgan")(cfg, data.spec, None)


def test_loader_batch_sizes_match_the_tables(make_config, teacher):
    cfg = _cfg(make_config, teacher, "sizes")
    data = datasets_for(cfg)
    sizes = {len(b) for b in make_loader(data.transfer, 32, shuffle=True, seed=0)}
    assert sizes == {32, 2}
