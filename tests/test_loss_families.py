"""The loss families as a whole: every family is registered and listed; on the loss-families pair
(VGG-9 -> VGG-4) no term sends gradient to the teacher and every term sends gradient to the student;
bad term configs are ConfigErrors before training that name the bad value. (Each loss's formula is
checked against numpy in tests/test_loss_{relational,feature,logit,srd,mi}.py.)"""
from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from kdlab.config import ConfigError
from kdlab.data import TransferInfo, dataset_spec
from kdlab.engine import save_classifier
from kdlab.experiments.specs import row_configs
from kdlab.methods import Distill
from kdlab.models import build_model
from kdlab.runner import load_run_config
from kdlab.terms import TERMS, Outputs, TermContext, build_objective
from kdlab.terms.objective import forward_features

FAMILIES = ("vid", "crd", "rkd", "pkt", "sp", "cc", "fsp", "nst", "ab", "ft", "dkd", "dist", "srd")
B = 16


def test_every_family_is_registered_and_listed(capsys, monkeypatch):
    from kdlab.cli import main

    assert set(FAMILIES) <= set(TERMS.names())
    monkeypatch.setenv("COLUMNS", "40")  # piped output ignores the width: names are never cut
    assert main(["list", "terms"]) == 0
    out = capsys.readouterr().out
    listed = {line.split("\t")[1] for line in out.splitlines()}
    assert listed == set(TERMS.names())
    assert main(["list", "terms", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)["terms"]
    assert set(entries) == set(TERMS.names())
    assert entries["kd"]["description"] == TERMS.describe()["kd"] and "student" in entries["kd"]["players"]
    for name in TERMS.names():
        cls = TERMS.get(name)
        assert cls.__doc__ and cls.__doc__.strip(), f"term {name!r} has no docstring"


def _pair():
    torch.manual_seed(0)
    return build_model("vgg4", width=0.25), build_model("vgg9", width=0.25)


def _ctx(student, teacher, provides=("teacher", "logits", "labels", "features", "index"), n=200):
    return TermContext(method="distill", kind="classifier", student=student, teacher=teacher, student_input=(1, 28, 28),
                       teacher_input=(1, 28, 28), provides=frozenset(provides), num_classes=10, transfer_size=n,
                       steps_per_epoch=n // B)


#: row -> objective.student of ``kdlab reproduce loss-families`` (small scale, 50 images per class)
ROWS = {row: OmegaConf.to_container(cfg.objective.student) for row, cfg in row_configs("loss-families", "small",
                                                                                         "limited").items()}
N_LIMITED = 500  # transfer images of that column: CRD's k = 499 needs them


@pytest.mark.parametrize("row", sorted(r for r in ROWS if r != "ce"))
def test_teacher_gets_no_gradient_and_student_does(row):
    """The teacher's parameters are left trainable here (as a codistill peer's are): still no gradient."""
    from kdlab.data.batch import Batch

    student, teacher = _pair()
    terms = {k: dict(v) for k, v in ROWS[row].items() if k != "ce"}
    if row == "ft":
        terms["ft"]["paraphraser_steps"] = 0  # pre-training makes the student's term 0 on purpose
    objective = build_objective(terms, _ctx(student, teacher, n=N_LIMITED))
    objective.train()
    x = torch.randn(B, 1, 28, 28)
    batch = Batch(x=x, y=torch.arange(B) % 10, index=torch.arange(B))
    out, feats = forward_features(student, x, objective.student_features)
    t_out, t_feats = forward_features(teacher, x, objective.teacher_features)
    values = objective(Outputs(out, feats, x=x), Outputs(t_out, t_feats, x=x), batch)
    assert torch.isfinite(values["loss"])
    values["loss"].backward()
    assert all(p.grad is None for p in teacher.parameters()), f"{row} sends gradient to the teacher"
    grads = [p.grad for p in student.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads), f"{row} sends no gradient to the student"


@pytest.fixture(scope="module")
def teacher_path(tmp_path_factory):
    torch.manual_seed(0)
    return save_classifier(build_model("vgg9", width=0.25), tmp_path_factory.mktemp("t") / "t.safetensors",
                           data="fashion-mnist")


def _build(teacher_path, tmp_path, terms, transfer=TransferInfo(size=300, indexed=True)):
    cfg = load_run_config([{
        "name": "s", "method": "distill", "out_dir": str(tmp_path), "teacher": {"checkpoint": str(teacher_path)},
        "data": {"n_per_class": 30, "val_size": 0, "batch_size": B}, "model": {"name": "vgg4", "kwargs": {"width": 0.25}},
        "objective": {"student": terms}}])
    return Distill(cfg, dataset_spec("fashion-mnist"), transfer)


BAD = {
    "unknown feature": ({"hints": {"layers": [["nope", "pool2"]]}}, ["'nope'", "pool1", "gap"]),
    "ranks differ": ({"ab": {"layers": [["gap", "pool2"]]}}, ["(128,)", "(32, 7, 7)"]),
    "vid ranks differ": ({"vid": {"layers": [["gap", "pool2"]]}}, ["(128,)", "(32, 7, 7)"]),
    "nst sizes differ": ({"nst": {"layers": [["pool1", "pool2"]]}}, ["(16, 14, 14)", "(32, 7, 7)"]),
    "k above the transfer set": ({"crd": {"k": 5000, "layers": [["gap", "gap"]]}}, ["5000", "300"]),
    "kd temperature 0": ({"kd": {"temperature": 0.0}}, ["temperature", "0"]),
    "dkd temperature < 0": ({"dkd": {"temperature": -1.0}}, ["temperature", "-1"]),
    "dist tau 0": ({"dist": {"tau": 0.0}}, ["tau"]),
    "crd temperature 0": ({"crd": {"temperature": 0.0}}, ["temperature"]),
    "ab margin 0": ({"ab": {"margin": 0.0, "layers": [["pool2", "pool2"]]}}, ["margin"]),
    "ab margin < 0": ({"ab": {"margin": -1.0, "layers": [["pool2", "pool2"]]}}, ["margin"]),
    "unknown kd reduction": ({"kd": {"reduction": "avg"}}, ["avg", "batchmean"]),
    "unknown cc kernel": ({"cc": {"kernel": "rbf"}}, ["rbf", "gaussian", "bilinear"]),
    "fsp pair lengths": ({"fsp": {"student_pairs": [["pool1", "features.conv2_1"]], "teacher_pairs": []}},
                         ["teacher_pairs"]),
    "srd without fc input": ({"srd": {"layers": [["pool2", "pool2"]]}}, ["pool2"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_term_config_is_a_config_error_naming_the_value(case, teacher_path, tmp_path):
    terms, words = BAD[case]
    with pytest.raises(ConfigError) as info:
        _build(teacher_path, tmp_path, terms)
    for w in words:
        assert w in str(info.value), (case, str(info.value))
    assert not (tmp_path / "s").exists()  # nothing written


def test_crd_without_row_indices_says_why(teacher_path, tmp_path):
    with pytest.raises(ConfigError, match="index") as info:
        _build(teacher_path, tmp_path, {"crd": {"k": 10, "layers": [["gap", "gap"]]}},
               TransferInfo(size=300, indexed=False))
    assert "row indices" in str(info.value)
