"""``kdlab reproduce vem-table1 | vem-table2 | vem-table3`` as specs keep the Python grid they replaced
(``kdlab.experiments.vem_i2i``, deleted): every seed-0 cell's resolved config equals the one the former module
built (up to name, label, out_dir and the paths of the teacher, the classifier and the discriminators), and so do
the configs of its init runs (the output domain's classifier and the teacher). The former module's tables, scales
and cell builder are transcribed below as data, independent of the specs; the departures (vem-table2's small
students 3 epochs instead of 4, to fit 5 seeds in 90 minutes; at small scale, OMGD's students with SSIM on [0, 1] and
Adam lr 1e-3, without which they did not train: vem-table1.yaml; vem-table3's small teacher at lr 1e-3 for 12 epochs
and its students 250 updates, after a first run whose students beat their teacher: vem-table3.yaml) are stated in
:data:`DEPARTURES` and :data:`TEACHER_DEPARTURES`."""
from __future__ import annotations

import json
from typing import Any, Dict, List

import pytest
from omegaconf import OmegaConf

from kdlab.compare import load_spec
from kdlab.compare.spec import find_config
from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.specs import SPEC_DIR

from test_spec_gan import _norm as _gan_norm, _plan

# ----------------------------------------------------------------------------- the former module, transcribed
ADDONS = ("alone", "vid", "crd", "vem")
TASKS = {"paired": ("pix2pix_edges2fashion", "fashion_classifier"),
         "unpaired": ("cyclegan_fashion2digits", "digits_classifier"),
         "unconditional": ("sagan_teacher", "fashion_classifier")}
#: algorithm -> (spec row prefix, student recipe, task, lambda_MI, width fraction)
ALGOS = {"omgd-paired": ("", "i2i_omgd_frozen", "paired", 0.1, 0.25),
         "omgd": ("omgd-", "i2i_omgd_unpaired", "unpaired", 0.1, 0.25),
         "cat": ("cat-", "i2i_cat", "unpaired", 0.005, 0.25),
         "gan-compression": ("gc-", "i2i_gan_compression", "unpaired", 0.1, 0.5),
         "gcc": ("gcc-", "gcc_sagan", "unconditional", 0.1, 52 / 64),
         "cagc": ("cagc-", "cagc_sagan", "unconditional", 0.05, 0.3)}
TABLES = {"vem-table1": ["omgd-paired"], "vem-table2": ["omgd", "cat", "gan-compression"], "vem-table3": ["gcc", "cagc"]}
SCALES: Dict[str, Dict[str, Any]] = {
    "small": {
        "classifier": ["trainer.epochs=3"],
        "teacher": {"paired": [], "unpaired": ["data.n_per_class=200", "trainer.epochs=5"],
                    "unconditional": ["model.kwargs.ngf=32", "players.disc_d=32", "data.n_per_class=1000",
                                      "trainer.epochs=25", "eval.n_samples=5000"]},
        "task": {"paired": ["data.n_per_class=200", "data.max_test=2000", "trainer.epochs=8", "players.ndf=32"],
                 "unpaired": ["data.n_per_class=200", "data.max_test=1000", "trainer.epochs=4", "players.ndf=32"],
                 "unconditional": ["data.n_per_class=1000", "data.max_test=5000", "trainer.epochs=4",
                                   "eval.n_samples=5000", "data.batch_size=64", "optim.lr=0.001"]},
        "student": ["data.batch_size=16", "trainer.log_every_n_steps=25"],
        "vem": {"channels": 8}, "crd": {"k": 1024},
    },
    "full": {
        "classifier": ["trainer.accelerator=auto"],
        "teacher": {t: ["trainer.accelerator=auto", "data.n_per_class=null", "trainer.epochs=40"]
                    for t in ("paired", "unpaired", "unconditional")},
        "task": {t: ["data.n_per_class=null", "trainer.epochs=20"] for t in ("paired", "unpaired", "unconditional")},
        "student": ["trainer.accelerator=auto", "trainer.log_every_n_steps=100"],
        "vem": {"channels": 32}, "crd": {"k": 16384},
    },
}
COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "eval.latency=false"]
EXTRACTOR_TERMS = ("perceptual", "style", "lpips", "cagc")
#: the specs' departures from the former module, applied after its cell's overrides: (table, scale) -> every row's,
#: (table, scale, algorithm) -> that algorithm's rows'
OMGD_SMALL = ["objective.student.ssim.form=unit", "optim.lr=0.001"]
EVAL_3K = ["data.max_test=3000", "eval.n_samples=3000", "eval.kid_subsets=20"]
DEPARTURES = {("vem-table2", "small"): ["trainer.epochs=3"], ("vem-table1", "small", "omgd-paired"): OMGD_SMALL,
              ("vem-table2", "small", "omgd"): OMGD_SMALL,
              ("vem-table3", "small"): ["trainer.epochs=2", "trainer.limit_train_batches=125",
                                        "trainer.log_every_n_steps=10", *EVAL_3K]}
#: (table, scale) -> the teacher init's departures
TEACHER_DEPARTURES = {("vem-table3", "small"): ["trainer.epochs=12", "optim.lr=0.001", *EVAL_3K]}
CLF, TEACHER = "/old/classifier", "/old/teacher"


def old_terms(recipe: str, addon: str, lam: float, sc: Dict[str, Any], task: str) -> Dict[str, Any]:
    terms = dict(OmegaConf.to_container(OmegaConf.load(grid.recipe(recipe)))["objective"]["student"])
    for name in EXTRACTOR_TERMS:
        if name in terms and "extractor" in terms[name]:
            terms[name] = {**terms[name], "extractor": CLF}
    if addon == "vid":
        terms["vid"] = {"weight": lam}
    elif addon == "crd":
        terms["crd"] = {"weight": lam, **sc["crd"]}
    elif addon == "vem":
        terms["vem"] = {"weight": lam, **sc["vem"], **({"target": "ground_truth"} if task == "paired" else {})}
    return terms


def old_classifier(sc, task: str):
    return grid.resolve([grid.recipe(TASKS[task][1])], ["out_dir=/old", *COMMON] + sc["classifier"] + ["seed=0"])


def old_teacher(sc, task: str, table: str, scale: str):
    return grid.resolve([grid.recipe(TASKS[task][0])], ["out_dir=/old", *COMMON] + sc["teacher"][task]
                        + TEACHER_DEPARTURES.get((table, scale), []) + [f"eval.extractor={CLF}", "seed=0"])


def old_cells(table: str, scale: str) -> Dict[str, Any]:
    """Spec row name -> the former seed-0 cell."""
    sc, out = SCALES[scale], {}
    for algo in TABLES[table]:
        prefix, recipe, task, lam, width = ALGOS[algo]
        t_cfg = old_teacher(sc, task, table, scale)
        kw = {**dict(t_cfg.model.kwargs), "ngf": max(8, int(round(t_cfg.model.kwargs.ngf * width)))}
        kw.pop("dropout", None)
        start = "teacher_disc" if algo == "gcc" else "disc_init"
        game = ([f"players.{start}={TEACHER}", f"players.disc_d={t_cfg.players.disc_d}", "players.latents=pool"]
                if task == "unconditional" else [])
        for addon in ADDONS:
            out[prefix + addon] = grid.resolve([grid.recipe(recipe)], [
                "out_dir=/old", *COMMON, f"teacher.checkpoint={TEACHER}", f"eval.extractor={CLF}",
                f"model.kwargs={json.dumps(kw)}", f"objective.student={json.dumps(old_terms(recipe, addon, lam, sc, task))}",
                "seed=0", "data.subset_seed=0", "name=x", "label=x",
            ] + game + sc["student"] + sc["task"][task] + DEPARTURES.get((table, scale), [])
                + DEPARTURES.get((table, scale, algo), []))
    return out


def _norm(cfg) -> str:
    """:func:`test_spec_gan._norm` (no name, label, out_dir, teacher and extractor paths), and the terms' feature
    networks and the discriminators' runs named by what they are, not where."""
    d = OmegaConf.to_container(cfg)
    for term in (d["objective"].get("student") or {}).values():
        if isinstance(term, dict) and "extractor" in term:
            term["extractor"] = "<classifier>"
    for key in ("teacher_disc", "disc_init"):
        if d.get("players", {}).get(key) not in (None, "teacher", "scratch"):
            d["players"][key] = "<teacher run>"
    return _gan_norm(OmegaConf.create(d))


# ---------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("scale", ["small", "full"])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_vem_table_spec_cells_equal_the_former_grid(table, scale, tmp_path):
    plan = _plan(table, scale, tmp_path)
    sc = SCALES[scale]
    task = ALGOS[TABLES[table][0]][2]
    inits = {c.row.label: c for c in plan.inits}
    assert set(inits) == {"init clf", "init teacher"}
    clf, teacher = inits["init clf"], inits["init teacher"]
    assert _norm(clf.cfg) == _norm(old_classifier(sc, task))
    assert _norm(teacher.cfg) == _norm(old_teacher(sc, task, table, scale))
    assert teacher.cfg.eval.extractor == str(clf.run_dir) and clf.seed == teacher.seed == 0
    old = old_cells(table, scale)
    cells = {c.row.slug: c for c in plan.cells if c.seed == 0}
    assert sorted(cells) == sorted(old)
    for slug, cell in cells.items():
        assert _norm(cell.cfg) == _norm(old[slug]), slug
        # every path points at this comparison's own init runs
        assert cell.cfg.teacher.checkpoint == str(teacher.run_dir) and cell.cfg.eval.extractor == str(clf.run_dir)
        for term in cell.cfg.objective.student.values():
            if "extractor" in term:
                assert term.extractor == str(clf.run_dir), slug
        for key in ("teacher_disc", "disc_init"):
            if cell.cfg.players.get(key) not in (None, "teacher", "scratch"):
                assert cell.cfg.players[key] == str(teacher.run_dir), (slug, key)
    # 5 seeds for every row (the former 3)
    assert sorted({c.seed for c in plan.cells}) == [0, 1, 2, 3, 4]
    assert plan.kind == ("generator" if task == "unconditional" else "image-to-image")


def test_vem_tables_declare_the_papers_claims():
    claims: List[tuple] = []
    for table, algos in TABLES.items():
        assert getattr(EXPERIMENTS.get(table), "spec_path", None) is not None  # kdlab list experiments
        spec = load_spec(find_config(table, packaged_dir=SPEC_DIR), scale="small", require_primary=True)
        primary = {(c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "primary"}
        for algo in algos:
            p = ALGOS[algo][0]
            # Tables 1-3: + VEM lowers the algorithm's FID; Table 4: and beats + VID and + CRD
            want = {(f"{p}vem", f"{p}{b}", "fid", "less") for b in ("alone", "vid", "crd")}
            assert want <= primary, (table, algo)
            claims += sorted(want)
        if table == "vem-table1":  # Table 1's Cityscapes mIoU, here the domain classifier's accuracy
            assert ("vem", "alone", "domain_acc", "greater") in primary
    assert len(claims) == 3 * 6
    assert "vem-table4" not in EXPERIMENTS.names()  # Table 4's claims are declared per algorithm above


# ------------------------------------------------------------------ image-to-image rows on a stand-in trainer
#: made-up numbers per (row, seed) on a paired task: + VEM's FID lower on every seed, its domain accuracy higher
I2I = {"alone": {"fid": [30.0, 32.0, 29.0, 31.5, 30.5], "acc": [0.70, 0.72, 0.69, 0.71, 0.70], "mae": [0.20] * 5},
       "vem": {"fid": [27.0, 30.5, 25.0, 29.0, 28.8], "acc": [0.74, 0.73, 0.73, 0.75, 0.71], "mae": [0.18] * 5}}


class FakeI2ITrain:
    """Stands in for kdlab.runner.train: the classifier and pix2pix init runs, then the students' translation runs."""

    def __init__(self) -> None:
        self.names: List[str] = []

    def __call__(self, cfg: Any, **kw: Any):
        from fake_runs import write_finished_generator_run, write_finished_run, write_finished_translation_run

        self.names.append(cfg.name)
        if cfg.method == "teacher":
            return write_finished_run(cfg, 90.0, [{"epoch": 0, "step": 10, "val/acc": 90.0}], {"0.0": 90.0})
        if cfg.method == "pix2pix":
            return write_finished_generator_run(cfg, 20.0, 90.0)
        row = I2I[cfg.name.split("-")[1]]
        return write_finished_translation_run(cfg, row["fid"][cfg.seed], row["acc"][cfg.seed], row["mae"][cfg.seed])


def _i2i_spec() -> Dict[str, Any]:
    rows = {"set": ["teacher.checkpoint=@init:teacher", "eval.extractor=@init:clf",
                    "objective.student.style.extractor=@init:clf", "objective.student.perceptual.extractor=@init:clf"]}
    return {"name": "i2i", "seeds": [0, 1, 2, 3, 4], "common": ["trainer.progress=false"],
            "init": {"clf": {"seed": 0, "recipe": "fashion_classifier", "set": ["trainer.epochs=1"]},
                     "teacher": {"seed": 0, "recipe": "pix2pix_edges2fashion", "set": ["eval.extractor=@init:clf"]}},
            "methods": [{"label": "OMGD alone", "name": "alone", "recipe": "i2i_omgd_frozen", **rows},
                        {"label": "OMGD + VEM", "name": "vem", "recipe": "i2i_omgd_frozen",
                         "set": rows["set"] + ["objective.student.vem={weight: 0.1, target: ground_truth}"]}],
            "primary": [{"a": "vem", "b": "alone", "metric": "fid", "label": "+ VEM lowers FID"},
                        {"a": "vem", "b": "alone", "metric": "domain_acc", "label": "+ VEM raises domain accuracy"}]}


def test_image_to_image_rows_compare_on_translation_metrics(monkeypatch, tmp_path):
    import numpy as np
    from scipy import stats

    from kdlab.compare import run_compare

    fake = FakeI2ITrain()
    monkeypatch.setattr(grid, "train", fake)
    result = run_compare(load_spec(_i2i_spec()), tmp_path)
    assert result.failed == 0 and fake.names[:2] == ["i2i-init-clf-s0", "i2i-init-teacher-s0"]
    results = json.loads((result.report.parent / "results.json").read_text())
    assert results["kind"] == "image-to-image"
    rows = {e["slug"]: e for e in results["rows"]}
    acc = {r: 100.0 * np.array(I2I[r]["acc"]) for r in I2I}  # reported in %
    assert rows["vem"]["domain_acc"]["mean"] == pytest.approx(acc["vem"].mean())
    assert rows["alone"]["fid"]["std"] == pytest.approx(np.std(I2I["alone"]["fid"], ddof=1))
    assert rows["vem"]["fidelity_mae"]["mean"] == pytest.approx(0.09)
    assert rows["vem"]["runs"][0]["teacher_fid"] == 20.0 and rows["vem"]["runs"][0]["ngf"] == 16
    comp = {c["metric"]: c for c in results["comparisons"]}
    assert comp["fid"]["direction"] == "less" and comp["domain_acc"]["direction"] == "greater"  # unstated: the better way
    p_fid = stats.ttest_rel(I2I["vem"]["fid"], I2I["alone"]["fid"]).pvalue
    p_acc = stats.ttest_rel(acc["vem"], acc["alone"]).pvalue
    assert comp["fid"]["p"] == pytest.approx(p_fid) and comp["domain_acc"]["p"] == pytest.approx(p_acc)
    assert comp["domain_acc"]["diff"] == pytest.approx((acc["vem"] - acc["alone"]).mean())
    low, high = sorted([p_fid, p_acc])  # Holm over the two: 2 p_(1), then max(that, p_(2))
    assert comp["fid"]["p_holm"] == pytest.approx({low: min(1.0, 2 * low), high: min(1.0, max(2 * low, high))}[p_fid])
    report = result.report.read_text()
    assert "## Translation quality" in report and "domain acc. % ↑" in report and "MAE to teacher ↓" in report
    assert "| OMGD + VEM |" in report and f"{acc['vem'].mean():.2f} ± {acc['vem'].std(ddof=1):.2f}" in report


def test_the_report_names_students_below_their_teachers_fid():
    from kdlab.compare.generators import beats_teacher_lines

    def row(label, fid, teacher):
        return {"label": label, "fid": {"mean": fid, "std": 1.0, "n": 5}, "runs": [{"teacher_fid": teacher}]}

    lines = beats_teacher_lines([row("OMGD alone", 30.0, 20.0), row("OMGD + VEM", 18.5, 20.0)])
    assert "OMGD + VEM (18.50 vs 20.00)" in lines[0] and "OMGD alone" not in lines[0]
    assert beats_teacher_lines([row("OMGD alone", 30.0, 20.0)]) == []
    assert beats_teacher_lines([row("no teacher", 10.0, None)]) == []


def test_a_translation_generator_file_is_no_teacher_of_latent_rows_and_back(monkeypatch, tmp_path):
    """The kind of a teacher given as a weights file is read from its metadata (the generator's registered input
    kind): a U-Net file for a latent-input row, a DCGAN file for an image-to-image row, both refused untrained."""
    from kdlab.compare import run_compare
    from kdlab.config import ConfigError
    from kdlab.engine.generators import save_generator
    from kdlab.models import build_generator

    unet = save_generator(build_generator("unet", 1, 28, in_channels=1, ngf=8), tmp_path / "unet.safetensors")
    dcgan = save_generator(build_generator("dcgan", 1, 28, d=4), tmp_path / "dcgan.safetensors")
    fake = FakeI2ITrain()
    monkeypatch.setattr(grid, "train", fake)
    cases = [("gan_student_mse", unet, "holds no generator but an image-to-image generator"),
             ("i2i_omgd_frozen", dcgan, "holds no image-to-image generator but a generator")]
    for recipe, path, words in cases:
        spec = {"name": "bad", "seeds": [0, 1], "common": ["trainer.progress=false"],
                "methods": [{"label": n, "recipe": recipe, "set": [f"teacher.checkpoint={path}"]} for n in ("a", "b")],
                "primary": [{"a": "a", "b": "b", "metric": "fid", "label": "x"}]}
        with pytest.raises(ConfigError, match=words):
            run_compare(load_spec(spec), tmp_path / recipe)
    assert fake.names == []
