"""``kdlab reproduce kdgan-fig6`` / ``kdgan-fig7`` / ``kdgan-teacher-collapse`` as specs keep the Python grids they
replaced (the former ``kdlab.experiments.kdgan_figs`` and ``kdgan_collapse`` over ``kdlab.experiments.kdgan``):
every seed-0 cell's resolved config, at both scales, equals the one the former grid built (up to the run's name,
label and where its teacher, start and d are), and so does the config of the run each of those paths points to
(the init runs: teacher, CE-pre-trained classifier, d, the collapse's warm-up runs); the callbacks that replaced
the former in-process traces get the former settings. The former modules' scales, variants and cell builders are
transcribed below as data and small functions, independent of the specs."""
from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

from test_spec_kdgan import OLD_SCALE, PATHS, _merge, _norm, old_base, old_student, old_teacher

#: the former SCALE's figure keys (``fig_*``, ``gammas``; Fig. 6 played at ns[1])
OLD_FIGS = {
    "small": {"gammas": [0.0, 1e-4, 1e-2, 1.0], "fig7_epochs": 6, "fig7_draws": 30, "fig6_n": 1000},
    "full": {"gammas": [0.0, 1e-4, 1e-3, 1e-2, 1e-1, 1.0], "fig7_epochs": 30, "fig7_draws": 100, "fig6_n": 10000},
}
MLP = {"name": "mlp", "kwargs": {"hidden": [800, 800]}}


def _both(key, value):
    return {p: {"kdgan_adversarial": {key: value}} for p in ("student", "teacher")}


#: the former FIG7_VARIANTS: run tag -> KDGAN config sections
OLD_FIG7 = {
    "categorical": {"players": {"sampler": "categorical"}},
    "gumbel-discrete": {"players": {"sampler": "gumbel"}, "objective": _both("score", "discrete")},
    "gumbel-concrete": {"players": {"sampler": "gumbel"}, "objective": _both("score", "concrete")},
    "gumbel-pathwise": {"players": {"sampler": "gumbel"}, "objective": _both("estimator", "pathwise")},
}
#: the former collapse VARIANTS: run tag -> (KDGAN config sections, steps d alone trains first), and its SCALES
OLD_COLLAPSE = {
    "published": ({"players": {"teacher_lr": 5e-4}}, 0),
    "scratch-warm": ({"players": {"teacher_lr": 5e-4, "disc_init": "scratch"}}, 40),
    "teacher-warm": ({"players": {"teacher_lr": 5e-4}}, 40),
    "epochs211": ({"players": {"teacher_lr": 5e-4, "schedule": [2, 1, 1], "schedule_unit": "epoch"}}, 0),
    "gamma1": ({"players": {"teacher_lr": 5e-4}, "objective": {"teacher": {"kdgan_distill": {"weight": 1.0}}}}, 0),
    "tlr1e-4": ({"players": {"teacher_lr": 1e-4}}, 0),
    "tlr3e-5": ({"players": {"teacher_lr": 3e-5}}, 0),
    "exact": ({"players": {"teacher_lr": 5e-4}, "objective": _both("estimator", "exact")}, 0),
    "code": ({"players": {"teacher_lr": 5e-4}, "objective": _both("estimator", "code")}, 0),
    "tce1": ({"players": {"teacher_lr": 5e-4}, "objective": {"teacher": {"ce": {"weight": 1.0}}}}, 0),
}
OLD_COLLAPSE_SCALES = {"small": {"steps": 120, "every": 20}, "full": {"steps": 400, "every": 40}}
N_COLLAPSE = 500


def _plan(name, scale, tmp_path):
    return plan_compare(load_spec(SPEC_DIR / f"{name}.yaml", scale=scale, seeds="0,1", require_primary=True), tmp_path)


def _check(plan, old_cell):
    """Every seed-0 cell of ``plan`` and the runs its paths point to against the former grid's
    (``old_cell(cell)`` -> (config dict, {path section: the config of the run it points to})); returns the
    checked row names."""
    inits = {str(c.run_dir): c for c in plan.inits}
    checked = []
    for cell in (c for c in plan.cells if c.seed == 0):
        cfg, refs = old_cell(cell)
        assert _norm(cell.cfg) == _norm(grid.resolve([cfg])), cell.cfg.name
        assert cell.cfg.data.subset_seed == 0  # one n-image subset for every seed, as the former grid
        for section, key in PATHS:
            path = OmegaConf.select(cell.cfg, f"{section}.{key}")
            if section not in refs:
                assert path is None or path in ("teacher", "scratch"), (cell.cfg.name, section, path)
                continue
            want, file = refs[section] if isinstance(refs[section], tuple) else (refs[section], None)
            run = path[:-len(file) - 1] if file else path
            assert run in inits and (file is None or path.endswith(f"/{file}")), (cell.cfg.name, section, path)
            assert _norm(inits[run].cfg) == _norm(grid.resolve([want])), (cell.cfg.name, section)
        checked.append(cell.row.slug)
    return checked


def _callbacks(cell):
    return {u.name: u.settings for u in cell.callbacks}


@pytest.mark.parametrize("scale", ["small", "full"])
def test_kdgan_fig6_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc, figs = OLD_SCALE[scale], OLD_FIGS[scale]
    plan = _plan("kdgan-fig6", scale, tmp_path)
    gammas = {"gamma-" + (f"{g:.0e}".replace("e-0", "e-") if 0 < g < 1 else f"{g:g}"): g for g in figs["gammas"]}

    def old_cell(cell):
        g = gammas[cell.row.slug[:-len(cell.row.column) - 1]]
        return old_student(sc, "kdgan", {"objective": {"teacher": {"kdgan_distill": {"weight": g}}}},
                           figs["fig6_n"], cell.seed)

    assert sorted(_check(plan, old_cell)) == sorted(f"{g}-{plan.spec.columns[0]}" for g in gammas)
    assert all(_callbacks(c) == {"kdgan-teacher-trace": {"every": 150 if scale == "small" else 2000}} for c in plan.cells)


@pytest.mark.parametrize("scale", ["small", "full"])
def test_kdgan_fig7_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc, figs = OLD_SCALE[scale], OLD_FIGS[scale]
    plan = _plan("kdgan-fig7", scale, tmp_path)

    def old_cell(cell):
        cfg = _merge(old_base(sc, 100), {
            "method": "kdgan", "seed": cell.seed, "model": MLP, "data": {"batch_size": 20},
            "trainer": {"epochs": figs["fig7_epochs"]},
            "players": {"disc_model": "lenet", "disc_kwargs": sc["teacher_kwargs"], "teacher_lr": 1e-5}},
            OLD_FIG7[cell.row.slug])
        return cfg, {"teacher": old_teacher(sc, 100)}

    assert sorted(_check(plan, old_cell)) == sorted(OLD_FIG7)
    assert all(_callbacks(c) == {"kdgan-grad-variance": {"draws": figs["fig7_draws"]}} for c in plan.cells)


@pytest.mark.parametrize("scale", ["small", "full"])
def test_kdgan_teacher_collapse_spec_resolves_to_the_former_diagnosis_configs(scale, tmp_path):
    ksc, csc = OLD_SCALE[scale], OLD_COLLAPSE_SCALES[scale]
    plan = _plan("kdgan-teacher-collapse", scale, tmp_path)

    def game(seed, sections, model, epochs):  # the former _game
        return _merge(old_base(ksc, N_COLLAPSE), {
            "method": "kdgan", "seed": seed, "model": model,
            "players": {"disc_model": "lenet", "disc_kwargs": ksc["teacher_kwargs"]}, "trainer": {"epochs": epochs}},
            sections)

    from kdlab.runner import datasets_for

    first = game(0, {}, {"name": "mlp"}, 1)
    spe = math.ceil(len(datasets_for(grid.resolve([first])).transfer) / first["data"]["batch_size"])
    assert spe == 5
    offsets = {}

    def old_cell(cell):  # the former _play
        sections, warm = OLD_COLLAPSE[cell.row.slug]
        refs, model = {"teacher": old_teacher(ksc, N_COLLAPSE)}, MLP
        warm_epochs = math.ceil(warm / spe)
        done = warm_epochs * spe
        if warm_epochs:
            src = game(cell.seed, _merge(sections, {"players": {"schedule": [1, 0, 0], "schedule_unit": "step"}}),
                       model, warm_epochs)
            lc = grid.resolve([src]).players
            sections = _merge(sections, {"players": {
                "tau_start": lc.tau_start * lc.tau_decay ** (warm_epochs // lc.tau_every)}})
            refs.update({"model": src, "players": (src, "discriminator.safetensors")})
        offsets[cell.row.slug] = done
        return game(cell.seed, sections, model, math.ceil((csc["steps"] - done) / spe)), refs

    assert sorted(_check(plan, old_cell)) == sorted(OLD_COLLAPSE)
    for cell in plan.cells:  # the former trace's settings; the warm-up rows' steps continue the warm-up's
        want = {"every": csc["every"], **({"offset": offsets[cell.row.slug]} if offsets[cell.row.slug] else {})}
        assert _callbacks(cell) == {"kdgan-teacher-trace": want}, cell.cfg.name
    warm = [c for c in plan.inits if "-init-warm-" in c.cfg.name]
    assert len(warm) == 4 and all(_callbacks(c) == {"save-player": {"player": "discriminator"}} for c in warm)
    assert {c.cfg.seed for c in warm} == {0, 1}  # one warm-up per row seed
    teacher = next(c for c in plan.inits if "-init-teacher-" in c.cfg.name)
    assert all(c.cfg.teacher.checkpoint == str(teacher.run_dir) for c in warm)  # an init referring to an init
    assert plan.inits.index(teacher) < min(plan.inits.index(c) for c in warm)  # trained before them


def test_kdgan_figures_declare_their_claims():
    """Fig. 6: the teacher at gamma 1e-4 and 1e-2 above gamma 0, gamma 1 below 1e-2 (teacher_acc_end); Fig. 7:
    without the Gumbel trick above each of its three readings (adv_grad_var_log10); the collapse: the published
    rate loses more teacher accuracy than 1e-4, 3e-5 and the CE anchor (teacher_acc_drop). Every primary metric is
    an analysis callback's; at least 5 seeds at small scale (10 where a run costs under a minute)."""
    want = {
        "kdgan-fig6": ("teacher_acc_end", {("gamma-1e-4", "gamma-0", "greater"), ("gamma-1e-2", "gamma-0", "greater"),
                                           ("gamma-1", "gamma-1e-2", "less")}, "Fig. 6"),
        "kdgan-fig7": ("adv_grad_var_log10", {("categorical", f"gumbel-{r}", "greater")
                                              for r in ("discrete", "concrete", "pathwise")}, "Fig. 7"),
        "kdgan-teacher-collapse": ("teacher_acc_drop", {("published", b, "greater") for b in ("tlr1e-4", "tlr3e-5", "tce1")},
                                   "kdlab"),
    }
    for name, (metric, pairs, paper) in want.items():
        for scale in ("small", "full"):
            spec = load_spec(SPEC_DIR / f"{name}.yaml", scale=scale, require_primary=True)
            primary = [c for c in spec.comparisons if c.kind == "primary"]
            col = f"-{spec.columns[0]}" if spec.columns else ""
            assert {(c.a, c.b, c.direction) for c in primary} == {(a + col, b + col, d) for a, b, d in pairs}, name
            assert all(c.metric == metric and paper in c.paper for c in primary), name
            assert all(metric in u.metrics for r in spec.rows for u in r.callbacks if u.name.startswith("kdgan-")), name
            assert len(spec.seeds) >= (10 if scale == "small" else 5), (name, scale)
