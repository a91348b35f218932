"""``kdlab reproduce mosaickd`` as a spec keeps the Python grid it replaced: every cell's resolved config,
at both scales, equals the one the former ``kdlab.experiments.mosaickd`` built (up to the run's name,
label and where the teacher is), and so does the teacher's. The former module's rows, scales and budget
formulas are transcribed below as data; the one deliberate change is the small scale's budget, 1 MosaicKD
epoch instead of 2 (5 seeds within 90 minutes; the ablations keep their 1 epoch), which enters the
former formulas as ``epochs`` and nowhere else. The spec writes every budget as a number, so a slip in
either fails here."""
from __future__ import annotations

import json

import pytest

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.config import ConfigError, to_yaml
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

SPEC = SPEC_DIR / "mosaickd.yaml"
KL_T1 = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 1.0}}
REGULARIZERS = {
    "none": ["players.discriminator=null", "objective.generator.gan.weight=0", "objective.discriminator.gan.weight=0"],
    "image": ["players.discriminator=dcgan", "players.disc_kwargs={}"],
}
FROZEN_G = ["players.train_generator=false", *REGULARIZERS["none"]]
PASSES = 5
#: the former SCALE; ``epochs`` at small is the new budget (formerly 2)
OLD_SCALE = {
    "small": {
        "seeds": [0, 1, 2, 3, 4],
        "common": ["data.val_size=1000", "data.max_test=2000", "eval.latency=false", "eval.noise_sigmas=[0.0]",
                   "trainer.progress=false", "trainer.tensorboard=false"],
        "teacher": [],
        "student": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "data.batch_size=128",
                    "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0.0", "optim.scheduler=cosine"],
        "epochs": 1, "ablation_epochs": 1, "ood_n": 4000, "hint_layers": "[[pool2, pool2]]",
        "sources": {"ood": ["data.transfer=mnist-digits"],
                    "ood2": ["data.transfer=skimage-patches", "data.transfer_channels=1", "data.transfer_size=28"]},
        "generator": ["players.generator_kwargs={ngf: 32}"],
    },
    "full": {
        "seeds": [0, 1, 2, 3, 4],
        "common": ["data.name=cifar100", "eval.latency=false", "trainer.progress=false"],
        "teacher": ["model.name=wrn_40_2", "optim.name=sgd", "optim.lr=0.1", "optim.weight_decay=0.0001",
                    "data.batch_size=128", "trainer.epochs=200", "data.augment=true"],
        "student": ["model.name=wrn_16_1", "model.kwargs={}", "data.batch_size=256", "optim.name=sgd", "optim.lr=0.1",
                    "optim.momentum=0.9", "optim.weight_decay=0.0001", "optim.scheduler=cosine"],
        "epochs": 200, "ablation_epochs": 200, "ood_n": 50000, "hint_layers": "[[block2, block2]]",
        "sources": {"ood": ["data.transfer=cifar10"]},
        "generator": [],
    },
}
OOD_ROWS = ("kd", "fitnet", "balanced", "mosaickd", "mosaickd-entropy", "frozen-g")
STRIDES = (1, 2, 3, 4)


def old_row(row: str, source, sc):
    """The former ``_row``: (recipe, overrides) of one row."""
    batch = int(next(o for o in sc["student"] if o.startswith("data.batch_size=")).split("=")[1])
    steps = -(-sc["ood_n"] // batch)
    mosaic_epochs, epochs = sc["epochs"], PASSES * sc["epochs"]
    src = sc["sources"].get(source, []) + [f"data.transfer_n={sc['ood_n']}"] if source else []
    terms = f"objective.student={json.dumps(KL_T1)}"
    if row == "indomain":
        return "mosaickd_kd", [terms, f"data.n_per_class={sc['ood_n'] // 10}", f"trainer.epochs={epochs}",
                               "data.transfer=train"]
    if row == "kd":
        return "mosaickd_kd", [terms, *src, f"trainer.epochs={epochs}"]
    if row == "fitnet":
        return "mosaickd_kd", [terms, "objective.student.hints.weight=1.0",
                               f"objective.student.hints.layers={sc['hint_layers']}", *src, f"trainer.epochs={epochs}"]
    if row == "balanced":
        return "mosaickd_kd", [terms, *src, "data.transfer_select=balanced", f"data.transfer_k={sc['ood_n'] // 2}",
                               f"trainer.epochs={2 * epochs}"]
    mosaic = [terms, *[o.replace("data.transfer=", "data.synth_real=") for o in src], f"players.synth_every={PASSES}",
              "players.epoch_pass=discriminator", *sc["generator"]]
    if row == "mosaickd":
        return "mosaickd", [*mosaic, f"trainer.epochs={mosaic_epochs}"]
    if row == "mosaickd-entropy":
        return "mosaickd", [*mosaic, "data.transfer_select=entropy", f"data.transfer_k={sc['ood_n'] // 2}",
                            f"trainer.epochs={2 * mosaic_epochs}"]
    if row == "frozen-g":
        return "mosaickd", [*mosaic, *FROZEN_G, f"trainer.epochs={mosaic_epochs}"]
    if row in ("dfad", "dafl"):
        return row, ["data.transfer=synth", f"data.steps_per_epoch={PASSES * steps}", f"trainer.epochs={mosaic_epochs}",
                     "players.latent_dim=100", *sc["generator"]]
    raise KeyError(row)


def old_cells(sc):
    """(row, column) -> (recipe, overrides, seeds) of the former grid, in the spec's column names."""
    cells = {(row, "no-ood"): (*old_row(row, None, sc), sc["seeds"]) for row in ("indomain", "dfad", "dafl")}
    for col in sc["sources"]:
        for row in OOD_ROWS:
            cells[(row, col)] = (*old_row(row, col, sc), sc["seeds"] if col == "ood" else [0, 1, 2])
    recipe, ov = old_row("mosaickd", "ood", sc)
    short = [f"trainer.epochs={sc['ablation_epochs']}"]
    for s in STRIDES:
        cells[(f"stride{s}", "ablation")] = (recipe, [*ov, *short, f"players.disc_kwargs={{final_stride: {s}}}"], [0])
    for reg, extra in REGULARIZERS.items():
        cells[(f"reg-{reg}", "ablation")] = (recipe, [*ov, *short, *extra], [0])
    return cells


@pytest.mark.parametrize("scale", ["small", "full"])
def test_mosaickd_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    sc = OLD_SCALE[scale]
    spec = load_spec(SPEC, scale=scale, require_primary=True)
    plan = plan_compare(spec, tmp_path)
    base = [f"out_dir={tmp_path}", *sc["common"]]
    old_teacher = grid.resolve([grid.recipe("mosaickd_teacher")], [*base, *sc["teacher"], f"name={plan.teacher.cfg.name}"])
    assert to_yaml(plan.teacher.cfg) == to_yaml(old_teacher)
    want = old_cells(sc)
    seen = {}
    for cell in plan.cells:
        key = (cell.row.slug[:-len(cell.row.column) - 1], cell.row.column)
        seen.setdefault(key, []).append(cell.seed)
        if len(seen[key]) > 1:  # the other seeds differ only in seed=, data.subset_seed= and the name
            continue
        recipe, ov, _ = want[key]
        old = grid.resolve([grid.recipe(recipe)], [
            *base, *sc["student"], *ov, f"teacher.checkpoint={plan.teacher_path}", f"seed={cell.seed}",
            f"data.subset_seed={cell.seed}", f"name={cell.cfg.name}", f"label={json.dumps(cell.cfg.label)}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
    assert seen == {k: v[2] for k, v in want.items()}  # every former cell, with its seeds, and nothing else
    cfg = {key: c.cfg for c in plan.cells for key in [(c.row.slug[:-len(c.row.column) - 1], c.row.column)]}
    _same_student_updates(cfg, scale)


def _same_student_updates(cfg, scale):
    """Budgets in student updates (from the resolved configs, not the spec's text): 5 loader passes of the
    KD rows (10 on the balanced half) = one published MosaicKD epoch of 5 student steps per OOD batch =
    one data-free epoch of ``steps_per_epoch`` steps = 5 passes over the in-domain reference's images."""
    ood = {row: c for (row, col), c in cfg.items() if col == "ood"}
    batches = -(-ood["kd"].data.transfer_n // ood["kd"].data.batch_size)
    want = ood["mosaickd"].trainer.epochs * PASSES * batches
    assert ood["kd"].trainer.epochs * batches == want
    assert ood["fitnet"].trainer.epochs * batches == want
    half = -(-ood["balanced"].data.transfer_k // ood["balanced"].data.batch_size)
    assert ood["balanced"].trainer.epochs * half == want
    assert ood["mosaickd-entropy"].trainer.epochs * PASSES * half == want
    assert ood["frozen-g"].trainer.epochs * PASSES * batches == want
    for row in ("dfad", "dafl"):
        assert cfg[(row, "no-ood")].trainer.epochs * cfg[(row, "no-ood")].data.steps_per_epoch == want
    ref = cfg[("indomain", "no-ood")]
    assert ref.trainer.epochs * -(-ref.data.n_per_class * 10 // ref.data.batch_size) == want


def test_mosaickd_declares_its_claims():
    """4 primary claims on the first OOD source (MosaicKD > KD, > DFAD, > DAFL, > the frozen-generator
    control), data-free rows taken from their own column; at least 5 seeds each; the rest secondary."""
    for scale in ("small", "full"):
        spec = load_spec(SPEC, scale=scale, require_primary=True)
        primary = sorted((c.a, c.b) for c in spec.comparisons if c.kind == "primary")
        assert primary == [("mosaickd-ood", "dafl-no-ood"), ("mosaickd-ood", "dfad-no-ood"),
                           ("mosaickd-ood", "frozen-g-ood"), ("mosaickd-ood", "kd-ood")]
        seeds = {r.slug: r.seeds or spec.seeds for r in spec.rows}
        assert all(len(seeds[s]) >= 5 for c in spec.comparisons if c.kind == "primary" for s in (c.a, c.b))
        secondary = sorted((c.a, c.b) for c in spec.comparisons if c.kind == "secondary")
        assert ("mosaickd-ood", "fitnet-ood") in secondary and ("mosaickd-ood", "balanced-ood") in secondary
        assert len(secondary) == (3 + 7 if scale == "small" else 3)
        assert not any("ablation" in s for c in spec.comparisons for s in (c.a, c.b))  # one seed: no test


def test_column_only_seeds_and_b_column_are_checked():
    """The column features the spec uses: ``only`` keeps a column's rows, ``seeds`` its seeds, ``b_column``
    takes b from another column; a comparison on a row a column leaves out, or with one seed, is refused."""
    rows = [{"label": "A", "name": "a", "set": ["trainer.epochs=1"]}, {"label": "B", "name": "b", "set": ["trainer.epochs=2"]}]
    base = {"methods": rows, "seeds": [0, 1],
            "columns": {"x": {"only": ["a"]}, "y": {"only": ["b"], "seeds": [0, 1, 2]}, "z": {"only": ["a"], "seeds": [5]}}}
    ok = load_spec({**base, "primary": [{"a": "a", "b": "b", "b_column": "y", "columns": ["x"], "metric": "test_acc_best",
                                         "label": "a beats b"}]})
    assert [(r.slug, r.seeds) for r in ok.rows] == [("a-x", None), ("b-y", [0, 1, 2]), ("a-z", [5])]
    assert [(c.a, c.b, c.column) for c in ok.comparisons] == [("a-x", "b-y", "x")]
    claim = {"a": "a", "b": "b", "metric": "test_acc_best", "label": "a beats b"}
    with pytest.raises(ConfigError, match="no row 'b-x'"):
        load_spec({**base, "primary": [{**claim, "columns": ["x"]}]})
    with pytest.raises(ConfigError, match="runs 1 seed"):
        load_spec({**base, "primary": [{**claim, "b_column": "y", "columns": ["z"]}]})
    with pytest.raises(ConfigError, match="b_column: no column 'w'"):
        load_spec({**base, "primary": [{**claim, "b_column": "w", "columns": ["x"]}]})
    with pytest.raises(ConfigError, match="only leaves out"):
        load_spec({**base, "columns": {"x": {"only": ["a"], "rows": {"b": ["trainer.epochs=3"]}}}})
    with pytest.raises(ConfigError, match="only = \\[\\]"):
        load_spec({**base, "columns": {"x": {"only": []}}})


def test_the_full_scale_student_is_a_plain_wrn_16_1():
    """The full scale's student ``{name: wrn_16_1, kwargs: {}}`` replaces the LeNet of the rows' recipes: its
    kwargs are not merged with the LeNet's (a layer that changes ``model.name`` drops the earlier kwargs)."""
    from kdlab.experiments.specs import row_configs
    from kdlab.models import build_model

    rows = row_configs("mosaickd", "full", "ood")
    assert rows, "no rows"
    for name, cfg in rows.items():
        assert cfg.model.name == "wrn_16_1" and dict(cfg.model.kwargs) == {}, (name, cfg.model)
    build_model("wrn_16_1", num_classes=100, in_channels=3, image_size=32)  # what those kwargs build


def test_a_layer_changing_the_architecture_drops_the_earlier_kwargs_only():
    from kdlab.runner import load_run_config

    base = {"method": "teacher", "model": {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}}
    other = load_run_config([base], ["model.name=mlp", "model.kwargs.hidden=[7]"])
    assert other.model.name == "mlp" and dict(other.model.kwargs) == {"hidden": [7]}
    same = load_run_config([base], ["model.name=lenet", "model.kwargs.fc=64"])
    assert dict(same.model.kwargs) == {"channels": [4, 8], "fc": 64}
