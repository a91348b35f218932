"""``kdlab reproduce vem-ablation`` / ``vem-ablation-classifier`` as specs keep the Python grid they replaced
(``kdlab.experiments.vem``, deleted; its classifier pair is the second spec, one kind of rows per spec): every
seed-0 cell's resolved config equals the one the former module built (up to name, label, out_dir and the paths
teacher.checkpoint and eval.extractor), and so do the configs of the runs those paths point to (the metric
classifier and the teacher GAN, init runs; the classifier pair's LeNet teacher). The former module's scales and
cell builders are transcribed below as data, independent of the specs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest

from kdlab.compare import load_spec
from kdlab.compare.spec import find_config
from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.specs import SPEC_DIR

from test_spec_gan import _norm, _plan  # the same normalisation and planning as the GAN specs' test

# ----------------------------------------------------------------------------- the former module, transcribed
#: vem.SCALES (seeds were [0, 1, 2] at both scales)
OLD: Dict[str, Dict[str, Any]] = {
    "small": {
        "classifier": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "trainer.epochs=2",
                       "data.val_size=2000", "optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0.0"],
        "teacher_d": 32,
        "teacher": ["players.disc_d=16", "trainer.epochs=3", "trainer.limit_train_batches=800"],
        "student_ds": [4, 8],
        "student": ["trainer.epochs=3", "trainer.limit_train_batches=400", "eval.n_samples=5000",
                    "trainer.log_every_n_steps=20"],
        "lam": 0.1, "vem": {"channels": 8, "step_size": 50.0}, "crd": {"k": 1024}, "lambda_d": 4, "ebm_lr_check": 1e-3,
        "clf": ["trainer.log_every_n_steps=16", "eval.latency=false"],
    },
    "full": {
        "classifier": ["trainer.accelerator=auto", "model.name=lenet", "trainer.epochs=15", "data.val_size=5000",
                       "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0.0"],
        "teacher_d": 32,
        "teacher": ["trainer.accelerator=auto", "players.disc_d=32", "trainer.epochs=25"],
        "student_ds": [4, 8],
        "student": ["trainer.accelerator=auto", "trainer.epochs=10", "eval.n_samples=10000",
                    "trainer.log_every_n_steps=50"],
        "lam": 0.1, "vem": {"channels": 32, "step_size": 50.0}, "crd": {"k": 16384}, "lambda_d": 4, "ebm_lr_check": 1e-3,
        "clf": ["trainer.accelerator=auto", "eval.latency=false"],
    },
}
OLD_COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "eval.latency=false"]
OLD_LAMBDAS = (0.005, 0.05, 0.2)  # Table 6's values; 0.1 reused the main vem cell of d = lambda_d
CLF, TEACHER = "/old/vem-metric-classifier/teacher.safetensors", "/old/vem-gan-teacher"


def old_gen_terms(row: str, sc, lam: Optional[float] = None, ebm_lr: Optional[float] = None) -> Dict[str, Any]:
    terms: Dict[str, Any] = {"mse": {"weight": 1.0}}
    w = sc["lam"] if lam is None else lam
    if row == "vid":
        terms["vid"] = {"weight": w}
    elif row == "crd":
        terms["crd"] = {"weight": w, **sc["crd"]}
    elif row == "vem":
        terms["vem"] = {"weight": w, **sc["vem"], **({"lr": ebm_lr} if ebm_lr is not None else {})}
    return terms


def old_clf_terms(row: str, lam: float) -> Dict[str, Any]:
    terms: Dict[str, Any] = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}
    if row != "kd":
        terms["vem"] = {"weight": lam, "step_size": 50.0 if row == "vem" else 1.0}
    return terms


def old_classifier(sc):
    return grid.resolve([{"method": "teacher", "label": "metric classifier"}],
                        ["out_dir=/old", *OLD_COMMON] + sc["classifier"]
                        + ["name=vem-metric-classifier", "data.batch_size=128", "seed=0"])


def old_teacher(sc):
    td = sc["teacher_d"]
    return grid.resolve([grid.recipe("gan_teacher")], ["out_dir=/old", *OLD_COMMON, f"model.kwargs.d={td}",
                                                        f"eval.extractor={CLF}", "name=vem-gan-teacher",
                                                        f"label=teacher DCGAN d={td}", "seed=0"] + sc["teacher"])


def old_student(sc, row: str, d: int, seed: int = 0, lam=None, ebm_lr=None):
    return grid.resolve([grid.recipe("gan_student_mse")], ["out_dir=/old", *OLD_COMMON,
        f"teacher.checkpoint={TEACHER}", f"model.kwargs.d={d}", f"eval.extractor={CLF}", "players.latents=pool",
        f"objective.student={json.dumps(old_gen_terms(row, sc, lam, ebm_lr))}", f"seed={seed}", "name=x", "label=x",
    ] + sc["student"])


def old_gen_cells(sc) -> Dict[str, Any]:
    """Spec row name -> the former seed-0 cell (the sensitivity runs: seed 0 only, at d = lambda_d)."""
    out = {f"{row}-d{d}": old_student(sc, row, d) for d in sc["student_ds"] for row in ("base", "vid", "crd", "vem")}
    for lam in OLD_LAMBDAS:
        out[f"lam{lam:g}-lambda"] = old_student(sc, "vem", sc["lambda_d"], lam=lam)
    out["ebm-lr0.001-lambda"] = old_student(sc, "vem", sc["lambda_d"], ebm_lr=sc["ebm_lr_check"])
    return out


def old_clf_teacher():
    return grid.resolve([grid.recipe("demo_teacher")], ["out_dir=/old", *OLD_COMMON, "name=vem-clf-teacher"])


def old_clf_cells(sc, seed: int = 0) -> Dict[str, Any]:
    return {row: grid.resolve([grid.recipe("demo_kd")], ["out_dir=/old", *OLD_COMMON, "teacher.checkpoint=/old/t",
            f"objective.student={json.dumps(old_clf_terms(row, sc['lam']))}", f"seed={seed}", f"data.subset_seed={seed}",
            f"name=vem-clf-{row}-s{seed}", "label=x"] + sc["clf"]) for row in ("kd", "vem", "vem-eta1")}


# ---------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("scale", ["small", "full"])
def test_vem_spec_cells_equal_the_former_grid(scale, tmp_path):
    plan = _plan("vem-ablation", scale, tmp_path)
    sc = OLD[scale]
    inits = {c.row.label: c for c in plan.inits}
    assert set(inits) == {"init clf", "init teacher"}
    clf, teacher = inits["init clf"], inits["init teacher"]
    assert _norm(clf.cfg) == _norm(old_classifier(sc))
    assert _norm(teacher.cfg) == _norm(old_teacher(sc))
    extractor = str(clf.run_dir / "teacher.safetensors")
    assert teacher.cfg.eval.extractor == extractor and clf.seed == teacher.seed == 0  # one of each for every cell
    old = old_gen_cells(sc)
    cells = {c.row.slug: c for c in plan.cells if c.seed == 0}
    assert sorted(cells) == sorted(old)
    for slug, cell in cells.items():
        assert _norm(cell.cfg) == _norm(old[slug]), slug
        assert cell.cfg.teacher.checkpoint == str(teacher.run_dir) and cell.cfg.eval.extractor == extractor
    # at least 5 seeds for every row of a primary comparison (the former 3); the sensitivity runs seed 0 only
    for row in plan.spec.rows:
        seeds = sorted(c.seed for c in plan.cells if c.row is row)
        assert seeds == ([0] if row.column == "lambda" else [0, 1, 2, 3, 4]), row.slug
    assert plan.kind == "generator"


@pytest.mark.parametrize("scale", ["small", "full"])
def test_vem_classifier_spec_cells_equal_the_former_pair(scale, tmp_path):
    plan = _plan("vem-ablation-classifier", scale, tmp_path)
    sc = OLD[scale]
    assert _norm(plan.teacher.cfg) == _norm(old_clf_teacher())
    for seed in (0, 3):  # each seed its own 100 images per class
        old = old_clf_cells(sc, seed)
        cells = {c.row.slug: c for c in plan.cells if c.seed == seed}
        assert list(cells) == list(old)
        for row, cell in cells.items():
            assert _norm(cell.cfg) == _norm(old[row]), (row, seed)
            assert cell.cfg.teacher.checkpoint == plan.teacher_path
    # 10 seeds (the former 3): rows of about a minute (issue 28: 10 where a row costs under a minute)
    assert sorted({c.seed for c in plan.cells}) == list(range(10)) and plan.kind == "classifier"


def test_vem_specs_declare_table4s_claims():
    for name in ("vem-ablation", "vem-ablation-classifier"):
        assert getattr(EXPERIMENTS.get(name), "spec_path", None) is not None  # kdlab list experiments
    spec = load_spec(find_config("vem-ablation", packaged_dir=SPEC_DIR), scale="small", require_primary=True)
    primary = {(c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "primary"}
    # Table 4: + VEM lowers FID against the base and against + VID / + CRD, at both student widths
    assert primary == {(f"vem-{d}", f"{b}-{d}", "fid", "less") for d in ("d4", "d8") for b in ("base", "vid", "crd")}
    assert all(c.kind == "secondary" for c in spec.comparisons if c.a.split("-")[0] in ("vid", "crd"))
    spec = load_spec(find_config("vem-ablation-classifier", packaged_dir=SPEC_DIR), scale="small", require_primary=True)
    assert {(c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "primary"} == {
        ("vem", "kd", "test_acc_best", "greater"), ("vem-eta1", "kd", "test_acc_best", "greater")}
