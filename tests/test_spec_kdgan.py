"""``kdlab reproduce kdgan-table3`` / ``kdgan-table4`` as specs keep the Python grids they replaced: every cell's
resolved config, at both scales, equals the one the former ``kdlab.experiments.kdgan`` built (up to the run's
name, label and where its teacher, start and d are), and so does the config of the run each of those three
paths points to (the init runs: teacher, CE-pre-trained classifier per seed, d). The former module's scales,
rows and cell builders are transcribed below as data and small functions, independent of the spec; the
former grid's n = 20K column of the small scale is left out by the spec (its cost), so it is not here either."""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.config import to_yaml
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

#: the former SCALE (the keys the tables used); the small teacher then trained 3 epochs, now 6 (a 5-point margin at n = 5K)
OLD_SCALE = {
    "small": {"ns": [500, 1000, 5000], "teacher_kwargs": {"channels": [8, 16], "fc": 128}, "teacher_data": "all",
              "teacher_epochs": 6, "epochs": 15, "val_size": 1000, "batch": 100, "pretrain_epochs": 5,
              "cycle": [2, 1, 1], "teacher_lr": 5e-4},
    "full": {"ns": [5000, 10000, 50000, 55000], "teacher_kwargs": {}, "teacher_data": "n", "pretrain_epochs": 10,
             "cycle": [20, 10, 10], "teacher_lr": 5e-4, "teacher_epochs": 30, "epochs": 50, "val_size": 5000,
             "batch": 100},
}
#: the former METHODS_T4 and DIAGNOSTICS_T4: spec row name -> (method, config sections merged over the row)
KDGAN_DISTILL_KL = {"mode": "kl", "temperature": 3.0}
OLD_ROWS = {
    "mimic": ("distill", {"objective": {"student": {"ce": {"weight": 0.0}, "logits": {"weight": 0.5, "mode": "paper"}}}}),
    "distn": ("distill", {"objective": {"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 3.0}}}}),
    "codis": ("codistill", {"players": {"peer": "teacher"}}),
    "kdgan": ("kdgan", {}),
    "kdgan-ce": ("kdgan", {"objective": {"student": {"ce": {"weight": 1.0}}}}),
    "kdgan-kl": ("kdgan", {"objective": {"student": {"kdgan_distill": KDGAN_DISTILL_KL},
                                         "teacher": {"kdgan_distill": KDGAN_DISTILL_KL}}}),
    "kdgan-a0": ("kdgan", {"players": {"alpha": 0.0}}),
    "kdgan-tce": ("kdgan", {"objective": {"teacher": {"ce": {"weight": 1.0}}}}),
}
PATHS = (("teacher", "checkpoint"), ("model", "checkpoint"), ("players", "disc_init"))


def _merge(a, *more):
    out = dict(a)
    for b in more:
        for k, v in b.items():
            out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def old_base(sc, n):
    return {"data": {"name": "fashion-mnist", "val_size": sc["val_size"], "n_per_class": n // 10, "subset_seed": 0,
                     "batch_size": sc["batch"], "eval_batch_size": 1000},
            "optim": {"name": "adam", "lr": 5e-4, "weight_decay": 0.0, "scheduler": "none"},
            "trainer": {"epochs": sc["epochs"], "progress": False, "tensorboard": False, "log_every_n_steps": 25},
            "eval": {"latency": False, "noise_sigmas": [0.0]}}


def old_teacher(sc, n):
    cfg = _merge(old_base(sc, n), {"method": "teacher", "model": {"name": "lenet", "kwargs": sc["teacher_kwargs"]},
                                   "trainer": {"epochs": sc["teacher_epochs"]}})
    if sc["teacher_data"] == "all":
        cfg["data"]["n_per_class"] = None
    return cfg


def old_pretrained(sc, n, seed, model):
    return _merge(old_base(sc, n), {"method": "teacher", "seed": seed, "model": model,
                                    "trainer": {"epochs": sc["pretrain_epochs"]}})


def old_student(sc, method, extra, n, seed, hidden=800):
    """(the former cell's config, {path key: the config of the run it points to})"""
    mlp = {"name": "mlp", "kwargs": {"hidden": [hidden, hidden]}}
    refs = {"teacher": old_teacher(sc, n), "model": old_pretrained(sc, n, seed, mlp)}
    players, epochs = {}, sc["epochs"]
    if method == "kdgan":
        n_d, n_t, n_c = sc["cycle"]
        epochs = sc["epochs"] * (n_d + n_t + n_c) // n_c
        refs["players"] = old_pretrained(sc, n, 1, {"name": "lenet", "kwargs": sc["teacher_kwargs"]})
        players = {"disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"], "schedule": list(sc["cycle"]),
                   "schedule_unit": "epoch", "teacher_lr": sc["teacher_lr"], "tau_every": max(epochs // 36, 1),
                   "tau_min": 0.01}
    cfg = _merge(old_base(sc, n), {"players": players}, extra,
                 {"method": method, "seed": seed, "model": mlp, "trainer": {"epochs": epochs}})
    return cfg, refs


def _norm(cfg):
    """A resolved config without name, label, out_dir and the three paths (text, for a readable diff)."""
    d = OmegaConf.to_container(cfg)
    for k in ("name", "label", "out_dir"):
        d.pop(k, None)
    for section, key in PATHS:
        d.get(section, {}).pop(key, None)
    return to_yaml(OmegaConf.create(d))


def _check_cells(plan, sc, old_cell):
    """Every seed-3 cell of ``plan`` and the runs its paths point to against the former grid's
    (``old_cell(cell, n)`` -> (config dict, refs))."""
    inits = {str(c.run_dir): c.cfg for c in plan.inits}
    cols = dict(zip(plan.spec.columns, sc["ns"]))
    checked = set()
    for cell in plan.cells[1::2]:  # seed 3 (seed 0 differs only in seed= and the seed-0 init runs)
        assert cell.seed == 3
        cfg, refs = old_cell(cell, cols[cell.row.column])
        assert _norm(cell.cfg) == _norm(grid.resolve([cfg])), cell.cfg.name
        assert cell.cfg.data.subset_seed == 0  # one n-image subset per n, as the former grid
        for section, key in PATHS:
            path = OmegaConf.select(cell.cfg, f"{section}.{key}")
            if section not in refs:
                assert path is None, (cell.cfg.name, section)
                continue
            assert path in inits, (cell.cfg.name, section, path)
            assert _norm(inits[path]) == _norm(grid.resolve([refs[section]])), (cell.cfg.name, section)
        checked.add(cell.row.slug)
    return checked


@pytest.mark.parametrize("scale", ["small", "full"])
def test_kdgan_table4_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc = OLD_SCALE[scale]
    plan = plan_compare(load_spec(SPEC_DIR / "kdgan-table4.yaml", scale=scale, seeds="0,3"), tmp_path)
    assert plan.teacher is None and len(plan.cells) == len(OLD_ROWS) * len(sc["ns"]) * 2

    def old_cell(cell, n):
        row = cell.row.slug[:-len(cell.row.column) - 1]
        method, extra = OLD_ROWS[row]
        return old_student(sc, method, extra, n, cell.seed)

    assert len(_check_cells(plan, sc, old_cell)) == len(OLD_ROWS) * len(sc["ns"])
    # the teacher: one for every n at small scale, one per n at full scale; d: seed 1 for every seed
    teachers = {c.cfg.name for c in plan.inits if "-init-teacher" in c.cfg.name}
    assert len(teachers) == (1 if scale == "small" else len(sc["ns"]))
    assert {c.cfg.seed for c in plan.inits if "-init-d-" in c.cfg.name} == {1}


@pytest.mark.parametrize("scale", ["small", "full"])
def test_kdgan_table3_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc = OLD_SCALE[scale]
    ns = sc["ns"][:3]  # the paper's three columns (the larger n was Table 4's alone)
    plan = plan_compare(load_spec(SPEC_DIR / "kdgan-table3.yaml", scale=scale, seeds="0,3"), tmp_path)
    assert len(plan.cells) == 4 * len(ns) * 2

    def old_cell(cell, n):
        hidden = int(cell.row.slug.split("-")[0][1:])
        return old_student(sc, "kdgan", {}, n, cell.seed, hidden=hidden)

    assert len(_check_cells(plan, {**sc, "ns": ns}, old_cell)) == 4 * len(ns)


def test_kdgan_tables_declare_their_claims():
    """Table 4: KDGAN above each baseline in the paper's three columns (9 primary), the rest of the ordering and
    the diagnostics secondary; Table 3: the largest classifier above the smallest per column (3 primary),
    neighbours secondary; at least 5 seeds at small scale; every paper value in its column."""
    paper_cols = ["paper-5k", "paper-10k", "paper-50k"]
    for scale in ("small", "full"):
        t4 = load_spec(SPEC_DIR / "kdgan-table4.yaml", scale=scale, require_primary=True)
        primary = sorted((c.a, c.b) for c in t4.comparisons if c.kind == "primary")
        assert primary == sorted((f"kdgan-{col}", f"{b}-{col}") for b in ("codis", "distn", "mimic")
                                 for col in paper_cols)
        assert all(c.direction == "greater" and "Table 4" in c.paper for c in t4.comparisons if c.kind == "primary")
        secondary = {(c.a.rsplit("-paper", 1)[0].replace("-large", ""), c.b.rsplit("-paper", 1)[0].replace("-large", ""))
                     for c in t4.comparisons if c.kind == "secondary"}
        assert secondary == {("codis", "distn"), ("codis", "mimic"), ("distn", "mimic")} | {
            (f"kdgan-{d}", b) for d in ("ce", "kl", "a0", "tce") for b in ("kdgan", "distn")}
        kdgan = {r.column: r.paper for r in t4.rows if r.slug.startswith("kdgan-") and r.label.startswith("KDGAN [")}
        assert kdgan["paper-5k"] == 99.01 and kdgan["paper-50k"] == 99.54 and kdgan.get("large") is None
        t3 = load_spec(SPEC_DIR / "kdgan-table3.yaml", scale=scale, require_primary=True)
        assert sorted((c.a, c.b) for c in t3.comparisons if c.kind == "primary") == [
            (f"h1200-{col}", f"h100-{col}") for col in sorted(paper_cols)]
        assert sorted({(c.a.split("-")[0], c.b.split("-")[0]) for c in t3.comparisons if c.kind == "secondary"}) == [
            ("h1200", "h800"), ("h200", "h100"), ("h800", "h200")]
        assert {r.paper for r in t3.rows if r.slug == "h100-paper-10k"} == {98.74}
        if scale == "small":
            assert len(t4.seeds) >= 5 and len(t3.seeds) >= 5
