"""``kdlab reproduce loss-families`` as a spec keeps the Python grid it replaced: every cell's resolved
config, at both scales, equals the one the former ``kdlab.experiments.loss_families`` built (up to the
run's name, label and where the teacher is), and so does the teacher's. The former module's rows, scales
and budget formulas are transcribed below as data; the spec writes the budget-dependent values (CRD's k,
DKD's warm-up, FT's paraphraser steps) as numbers, so a slip in either fails here."""
from __future__ import annotations

import json

import pytest

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.config import to_yaml
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

POOLS = [["pool1", "pool1"], ["pool2", "pool2"], ["pool3", "pool3"]]
GAP = [["gap", "gap"]]
PRE_RELU = "features.conv2_1.1"


def old_rows(crd_k: int, n_rows: int, epochs: int, steps: int):
    """The former ``rows()``: row -> (label, objective.student) for a budget of ``n_rows`` transfer images."""
    ce = {"ce": {"weight": 1.0}}
    return {
        "ce": ("CE (student alone)", dict(ce)),
        "kd": ("KD (Hinton et al. 2015)", {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}),
        "hints": ("FitNets hints (Romero et al. 2015)", {**ce, "hints": {"weight": 100.0, "layers": [["pool2", "pool2"]]}}),
        "attention": ("AT (Zagoruyko & Komodakis 2017)",
                      {**ce, "attention": {"weight": 1000.0, "mode": "zagoruyko", "layers": POOLS}}),
        "sp": ("SP (Tung & Mori 2019)", {**ce, "sp": {"weight": 3000.0, "layers": [["pool3", "pool3"]]}}),
        "cc": ("CC (Peng et al. 2019)", {**ce, "cc": {"weight": 100.0, "gamma": 0.4, "order": 2, "layers": GAP}}),
        "vid": ("VID (Ahn et al. 2019)", {**ce, "vid": {"weight": 1.0, "layers": POOLS}}),
        "rkd": ("RKD (Park et al. 2019)", {**ce, "rkd": {"weight": 1.0, "layers": GAP}}),
        "pkt": ("PKT (Passalis & Tefas 2018)", {**ce, "pkt": {"weight": 30000.0, "layers": GAP}}),
        "ab": ("AB (Heo et al. 2019)", {**ce, "ab": {"weight": 0.003, "reduction": "batchmean", "margin": 1.0,
                                                    "layers": [[PRE_RELU, PRE_RELU]]}}),
        "ft": ("FT (Kim et al. 2018)", {**ce, "ft": {"weight": 1.0, "layers": [["pool3", "pool3"]],
                                                    "paraphraser_steps": max(1, steps // 10)}}),
        "fsp": ("FSP (Yim et al. 2017)", {**ce, "fsp": {"weight": 0.1, "student_pairs": [["pool1", "features.conv2_1"]],
                                                       "teacher_pairs": [["pool1", "features.conv2_1"]]}}),
        "nst": ("NST (Huang & Wang 2017)", {**ce, "nst": {"weight": 50.0, "layers": POOLS[1:]}}),
        "crd": ("CRD (Tian et al. 2020)", {**ce, "crd": {"weight": 0.8, "layers": GAP, "k": min(crd_k, n_rows - 1)}}),
        "dkd": ("DKD (Zhao et al. 2022)", {**ce, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                                        "warmup": max(1, round(epochs / 12))}}),
        "dist": ("DIST (Huang et al. 2022)", {**ce, "dist": {"weight": 1.0, "beta": 2.0, "gamma": 2.0, "tau": 4.0}}),
        "srd": ("SRD (Yang et al. 2021)", {**ce, "srd": {"weight": 1.0, "layers": GAP}}),
    }


#: the former SCALE (budgets: spec column -> (images per class or None = all, epochs))
OLD_SCALE = {
    "small": {"common": ["data.val_size=500", "data.max_test=2000", "eval.latency=false", "eval.noise_sigmas=[0.0]",
                         "trainer.progress=false", "trainer.tensorboard=false"],
              "teacher": ["data.n_per_class=1000", "trainer.epochs=5"],
              "budgets": {"limited": (50, 40), "full": (500, 6)}, "width": ["model.kwargs.width=0.25"], "crd_k": 4096},
    "full": {"common": ["eval.latency=false", "trainer.progress=false"], "teacher": ["trainer.epochs=30"],
             "budgets": {"limited": (100, 240), "full": (None, 240)}, "width": ["model.kwargs.width=1.0"],
             "crd_k": 16384},
}
TRAIN_SIZE = 60000  # Fashion-MNIST's training split; the former grid's full budget left 5,000 for validation


@pytest.mark.parametrize("scale", ["small", "full"])
def test_loss_families_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc = OLD_SCALE[scale]
    spec = load_spec(SPEC_DIR / "loss-families.yaml", scale=scale, seeds="0,3")
    plan = plan_compare(spec, tmp_path)
    base = [f"out_dir={tmp_path}", *sc["common"]]
    old_teacher = grid.resolve([grid.recipe("loss_families_teacher")],
                               [*base, *sc["width"], *sc["teacher"], f"name={plan.teacher.cfg.name}"])
    assert to_yaml(plan.teacher.cfg) == to_yaml(old_teacher)
    assert len(plan.cells) == 17 * 2 * 2
    checked = set()
    for cell in plan.cells[1::2]:  # seed 3 of every cell (seed 0 differs only in seed= and data.subset_seed=)
        row, col = cell.row.slug.rsplit("-", 1)
        n, epochs = sc["budgets"][col]
        n_rows = n * 10 if n is not None else TRAIN_SIZE - 5000
        label, terms = old_rows(sc["crd_k"], n_rows, epochs, epochs * -(-n_rows // 64))[row]
        assert cell.row.label == f"{label} [{col}]"
        old = grid.resolve([grid.recipe("loss_families_student")], [
            *base, *sc["width"], f"teacher.checkpoint={plan.teacher_path}",
            f"data.n_per_class={'null' if n is None else n}", f"trainer.epochs={epochs}", f"seed={cell.seed}",
            f"data.subset_seed={cell.seed}", f"name={cell.cfg.name}", f"label={json.dumps(cell.cfg.label)}",
            f"objective.student={json.dumps(terms)}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
        checked.add((row, col))
    assert len(checked) == 17 * 2


def test_loss_families_declares_its_claims_per_column():
    """KD > CE in both columns, CRD > KD and DKD > KD where the papers make the claim (the full-data
    column): 4 primary comparisons; every other family against KD in both columns, secondary."""
    for scale in ("small", "full"):
        spec = load_spec(SPEC_DIR / "loss-families.yaml", scale=scale, require_primary=True)
        primary = sorted((c.a, c.b) for c in spec.comparisons if c.kind == "primary")
        assert primary == [("crd-full", "kd-full"), ("dkd-full", "kd-full"), ("kd-full", "ce-full"),
                           ("kd-limited", "ce-limited")]
        secondary = {c.a for c in spec.comparisons if c.kind == "secondary"}
        assert secondary == {f"{r}-{col}" for r in ("hints", "attention", "sp", "cc", "vid", "rkd", "pkt", "ab",
                                                    "ft", "fsp", "nst", "dist", "srd") for col in ("limited", "full")
                             } | {"crd-limited", "dkd-limited"}
        assert all(c.b.startswith("kd-") for c in spec.comparisons if c.kind == "secondary")
        assert len(spec.seeds) >= 5
