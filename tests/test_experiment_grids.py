"""Every ``kdlab reproduce`` experiment (and ``kdlab demo``) walks its whole grid without training.

The grid runner's ``train`` is replaced by a stand-in that builds the cell's method from its resolved
config (so config keys, term names and keys, feature names, term requirements and teacher
checkpoints are all checked), calls the cell's callbacks on the untrained players (start, each epoch's
end, end: no steps), writes the untrained weights where a run would, and a made-up ``summary.json``. Each grid is then walked a second time: every cell must be reused (same run
names, same resolved configs). Real training of these grids is in the slow tests.
"""
from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List

import pytest

from kdlab.config import to_yaml
from kdlab.data import TransferInfo, dataset_spec
from kdlab.experiments import EXPERIMENTS, grid
from kdlab.methods import METHODS
from kdlab.runner import check_transfer
from kdlab.terms import Student


def _spec(cfg: Any):
    """The data set's spec without loading the data (the class subset as build_datasets makes it)."""
    spec = dataset_spec(cfg.data.name, image_size=cfg.data.image_size)
    if cfg.data.classes is not None:
        keep = [int(c) for c in cfg.data.classes]
        spec = replace(spec, num_classes=len(keep), class_names=[spec.class_names[c] for c in keep])
    return spec


def _terms(method: Any) -> List[str]:
    """The built (weight > 0) terms of the method's first student player ([] without one)."""
    for player in method.players.values():
        if isinstance(player, Student):
            return sorted(player.objective.terms)
    return []


class FakeTrain:
    """Stands in for :func:`kdlab.runner.train`: builds the method, writes the run files, records the cell."""

    def __init__(self) -> None:
        self.cells: Dict[str, Dict[str, Any]] = {}
        self.calls = 0
        self.traced: List[str] = []  # cells trained with callbacks

    def __call__(self, cfg: Any, **kw: Any) -> Path:
        from safetensors.torch import save

        self.calls += 1
        method_cls = METHODS.get(cfg.method)
        check_transfer(cfg, method_cls)
        spec = _spec(cfg)
        # rows as the run would have them (the labelled subset, or a data-free source), for terms sized by it
        rows = (cfg.data.steps_per_epoch or 1) * cfg.data.batch_size if cfg.data.transfer == "none" else \
            (cfg.data.n_per_class or 1000) * spec.num_classes
        method = method_cls(cfg, spec, TransferInfo(size=rows, indexed=True))
        run = Path(cfg.out_dir) / cfg.name
        run.mkdir(parents=True, exist_ok=True)
        state, meta = method.export_state(data=cfg.data.name)
        (run / f"{method.export_name}.safetensors").write_bytes(save(state, metadata=meta))
        discs = {n: m.state_dict() for n, m in method.players.items() if n.startswith("disc")}
        if discs:  # a later cell may start its D from this run's (players.disc_init; CycleGAN's disc_b)
            from kdlab.engine.checkpoint import save_checkpoint

            save_checkpoint({"method": {"players": discs}}, run / "checkpoints" / "last.ckpt")
        summary = {"name": cfg.name, "test_acc_best": 50.0, "test_acc_last": 49.0, "train_time_s": 1.0,
                   "noise_acc": {str(float(s)): 50.0 for s in cfg.eval.noise_sigmas},
                   "model": {"name": cfg.model.name, "params": 1}, "data": {"name": cfg.data.name},
                   "teacher": {"test_acc": 60.0, "test_acc_at_best": 60.0, "test_acc_last": 60.0}}
        if kw.get("callbacks"):  # the traces, from the untrained players (the real loop: tests/test_callbacks.py)
            from kdlab.engine.callbacks import PlayersView

            view = PlayersView(method, cfg, run)
            for cb in kw["callbacks"]:
                cb.on_fit_start(view)
            for epoch in range(cfg.trainer.epochs):
                view._at(epoch + 1, 0)
                for cb in kw["callbacks"]:
                    cb.on_epoch_end(view, epoch, {})
            for cb in kw["callbacks"]:
                cb.on_fit_end(view)
            self.traced.append(cfg.name)
        (run / "metrics.jsonl").write_text("")
        (run / "config.yaml").write_text(to_yaml(cfg))
        (run / "summary.json").write_text(json.dumps(summary))
        assert cfg.name not in self.cells, f"two cells named {cfg.name!r} in one grid"
        self.cells[cfg.name] = {"method": cfg.method, "terms": _terms(method)}
        return run


@pytest.fixture
def fake_train(monkeypatch):
    import kdlab.report
    import kdlab.report.gan

    fake = FakeTrain()
    monkeypatch.setattr(grid, "train", fake)

    def fake_report(runs, out, **kw):  # the comparison reports need real metrics (slow tests)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.md").write_text("\n".join(str(r) for r in runs) + "\n")
        return out / "report.md"

    monkeypatch.setattr(kdlab.report.gan, "compare_generator_runs", fake_report)
    monkeypatch.setattr(kdlab.report, "compare_runs", fake_report)
    # the KDGAN analyses, cheaper: Fig. 7's gradients over two draws at the first epoch only (later epochs: a
    # made-up variance), the teacher's accuracy on the first 1,000 test images
    from kdlab.experiments import kdgan_traces

    variance = kdgan_traces.grad_variance
    monkeypatch.setattr(kdgan_traces, "grad_variance",
                        lambda view, batch, which, draws: variance(view, batch, which, 2) if view.epoch == 0 else 1e-3)
    accuracy = kdgan_traces.handle_accuracy
    monkeypatch.setattr(kdgan_traces, "handle_accuracy", lambda net, batches, view="student": accuracy(net, batches[:1], view))
    return fake


def _walk(name: str, out: Path):
    if name == "demo":
        from kdlab.demo import run_demo

        return run_demo(out, quick=False)
    # other seeds change only seed= and data.subset_seed=; a spec experiment's paired tests need 2
    seeds = [0, 1] if getattr(EXPERIMENTS.get(name), "spec_path", None) else [0]
    return EXPERIMENTS.get(name)(out, "small", seeds, [])


#: experiment -> cell -> the terms its method must build (weight > 0): the rows mean what they say
TERMS = {
    "jacobian-table1": {f"jacobian-table1-{row}-n1-s0": terms for row, terms in {
        "ce": ["ce"], "ce-act": ["ce", "logits"], "ce-jac": ["ce", "jacobian"], "ce-act-jac": ["ce", "jacobian", "logits"],
        "act": ["logits"], "act-jac": ["jacobian", "logits"]}.items()},
    "jacobian-table3": {f"jacobian-table3-{row}-n5-s0": terms for row, terms in {
        "ce": ["ce"], "oracle": ["ce"], "lwf": ["ce", "logits"], "lwf-jac": ["attention_jacobian", "ce", "logits"],
        "lwf-at": ["attention", "ce", "logits"], "lwf-at-jac": ["attention", "attention_jacobian", "ce", "logits"]}.items()},
    "jacobian-table4": {f"jacobian-table4-{row}-s0": ["attention", "attention_jacobian", "ce", "logits"]
                        for row in ("layer1-pool2", "layer4-pool5")},
    "jacobian-table5": {"jacobian-table5-none-s0": ["attention", "attention_jacobian", "ce", "logits"]},
    # the classifier's objective: CODIS's is CE + the codistill term, KDGAN's its adversarial and distillation terms
    "kdgan-table4": {f"kdgan-table4-{row}-paper-5k-s0": terms for row, terms in {
        "mimic": ["logits"], "distn": ["ce", "kd"], "codis": ["ce", "codistill"],
        "kdgan": ["kdgan_adversarial", "kdgan_distill"], "kdgan-ce": ["ce", "kdgan_adversarial", "kdgan_distill"],
        "kdgan-kl": ["kdgan_adversarial", "kdgan_distill"], "kdgan-a0": ["kdgan_adversarial", "kdgan_distill"],
        "kdgan-tce": ["kdgan_adversarial", "kdgan_distill"]}.items()},
    "kdgan-table3": {f"kdgan-table3-h{h}-paper-5k-s0": ["kdgan_adversarial", "kdgan_distill"] for h in (100, 1200)},
    "loss-families": {f"loss-families-{row}-limited-s0": sorted({"ce", row})
                      for row in ("ce", "kd", "hints", "attention", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp",
                                  "nst", "crd", "dkd", "dist", "srd")},
    "mosaickd": {"mosaickd-kd-ood-s0": ["kd"], "mosaickd-fitnet-ood2-s0": ["hints", "kd"], "mosaickd-mosaickd-ood-s0": ["kd"],
                 "mosaickd-dfad-no-ood-s0": ["l1"], "mosaickd-indomain-no-ood-s0": ["kd"],
                 "mosaickd-reg-none-ablation-s0": ["kd"]},
    # the MSE students' one term; the joint students' adversarial term (their critic's are its own)
    "gan-compression-sweep": {"gan-compression-sweep-mse-d16-s0": ["mse"], "gan-compression-sweep-mse-d2-s0": ["mse"],
                              "gan-compression-sweep-joint-d4-s0": ["gan", "mse"]},
    "gan-joint-vs-mse": {"gan-joint-vs-mse-mse-paper-s0": ["mse"], "gan-joint-vs-mse-joint-a0.3-paper-s0": ["gan", "mse"],
                         "gan-joint-vs-mse-joint-w0.01-weights-s0": ["gan", "mse"]},
    "vem-ablation": {"vem-ablation-base-d4-s0": ["mse"], "vem-ablation-vid-d8-s0": ["mse", "vid"],
                     "vem-ablation-crd-d4-s0": ["crd", "mse"], "vem-ablation-vem-d8-s0": ["mse", "vem"],
                     "vem-ablation-lam0.005-lambda-s0": ["mse", "vem"]},
    "vem-ablation-classifier": {"vem-ablation-classifier-kd-s0": ["ce", "kd"],
                                "vem-ablation-classifier-vem-eta1-s0": ["ce", "kd", "vem"]},
    # the i2i students' GAN game is their term gan
    "vem-table1": {f"vem-table1-{a}-s0": sorted(["channel_distill", "perceptual", "ssim", "style", "tv"] + x)
                   for a, x in {"alone": [], "vid": ["vid"], "crd": ["crd"], "vem": ["vem"]}.items()},
    "vem-table3": {**{f"vem-table3-gcc-{a}-s0": sorted(["gan", "gcc"] + x)
                      for a, x in {"alone": [], "vid": ["vid"], "crd": ["crd"], "vem": ["vem"]}.items()},
                   **{f"vem-table3-cagc-{a}-s0": sorted(["cagc", "gan"] + x)
                      for a, x in {"alone": [], "vid": ["vid"], "crd": ["crd"], "vem": ["vem"]}.items()}},
    "vem-table2": {"vem-table2-cat-vem-s0": ["gan", "kernel_alignment", "l1_image", "vem"],
                   "vem-table2-gc-crd-s0": ["crd", "gan", "gc_distill", "l1_image"]},
    "demo": {"demo-ce-s0": ["ce"], "demo-kd-s0": ["ce", "kd"], "demo-logits-s0": ["ce", "logits"]},
}


def _orderings_are_tested(text):
    """Every sentence of a report that states an ordering ("A > B by ...") carries a paired test across
    seeds: its p-value and number of seeds, or "untested" with the seed count (issue 10 part 5;
    tests/test_report_orderings.py checks the sentences themselves on fabricated tables)."""
    for line in text.splitlines():
        if re.search(r"\S [<>=] \S.* by [0-9.]+ ", line):
            assert re.search(r"paired t-test p = [0-9.e+-]+, n = \d+ seeds|untested: \d+ seed", line), line


@pytest.mark.parametrize("name", sorted(EXPERIMENTS.names()) + ["demo"])
def test_every_cell_of_the_small_grid_builds_and_is_reused(name, fake_train, tmp_path):
    report = _walk(name, tmp_path)
    assert Path(report).is_file()
    _orderings_are_tested(Path(report).read_text())
    cells = fake_train.cells
    assert cells, "the grid has no cell"
    for cell, terms in TERMS.get(name, {}).items():
        assert cells[cell]["terms"] == terms, cell
    if name in ("kdgan-fig6", "kdgan-fig7", "kdgan-teacher-collapse"):  # every game is a cell traced by callbacks
        assert fake_train.traced and all(c in cells for c in fake_train.traced)
        results = json.loads((Path(report).parent / "results.json").read_text())
        metrics = results["comparisons"][0]["metric"]  # an analysis' metric, read back from every run's file
        assert all(isinstance(r["analysis"][metrics], float) for e in results["rows"] for r in e["runs"])
    first = fake_train.calls
    _walk(name, tmp_path)
    assert fake_train.calls == first, "a finished cell was trained again"


def test_grid_helpers(tmp_path):
    assert grid.mean_std_text([90.0, 92.0]) == "91.00 ± 1.41"
    assert grid.mean_std_text([90.0]) == "90.00"
    assert grid.mean_std_text([]) == grid.mean_std_text([None, float("nan")]) == "—"
    assert grid.mean([1.0, 2.0]) == 1.5 and grid.mean([]) is None
    report = grid.write_report(tmp_path / "x", "Title", ["a", "", "b"], {"acc": [1.0]})
    assert report.read_text() == "# Title\n\na\n\nb\n"
    assert json.loads((tmp_path / "x" / "results.json").read_text()) == {"acc": [1.0]}
    assert not (grid.write_report(tmp_path / "y", "T", []).parent / "results.json").exists()
    assert grid.recipe("demo_kd").is_file()


def test_run_cell_trains_again_when_the_config_changes(fake_train, make_config, tmp_path):
    teacher = make_config(name="t")
    first = grid.run_cell([teacher])
    assert fake_train.calls == 1 and grid.finished_run(grid.resolve([teacher])) == first
    assert grid.run_cell([teacher]) == first and fake_train.calls == 1  # reused
    fake_train.cells.clear()
    assert grid.run_cell([teacher], ["trainer.epochs=4"]) == first and fake_train.calls == 2  # same name, new config


@pytest.mark.parametrize("name", sorted(p.stem for p in grid.RECIPES.glob("*.yaml")))
def test_every_packaged_recipe_resolves(name):
    """Every recipe's keys, term names and values are valid for its method (nothing is built or trained)."""
    cfg = grid.resolve([grid.recipe(name)])
    assert cfg.method in METHODS
