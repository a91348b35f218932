"""VEM's ablation (Kang et al., NeurIPS 2022, Tables 4-6): ``kdlab reproduce vem-ablation``.

The question of Table 4: does the energy-based MI add-on (VEM) improve a distilled generator, and does
it beat the other MI add-ons (VID's factorised Gaussian, CRD's contrastive bound)? Here on DCGAN
compression (Aguinaldo et al.'s ``gan-compression``, the base being its MSE student of Fig. 3), with
every row on equal terms: the same frozen teacher, student architecture, student updates, schedule,
latents (``players.latents=pool``: a fixed z per transfer row, which CRD's memory needs) and seeds:

* ``base``: MSE to the teacher's image for the same z;
* ``vid`` / ``crd`` / ``vem``: base + the add-on on the output images, each weighted ``lambda`` (Table 6's
  most common lambda_MI, 0.1, for all three);
* lambda_MI sensitivity (Tables 5-6 values 0.005, 0.05, 0.1, 0.2) for VEM on the smallest student, and
  one VEM run whose EBM learns at 10x the paper's rate (1e-3);
* the same ablation on a classifier pair with ``distill`` (the demo's LeNet teacher -> MLP student on
  100 images per class, CE + KD at T = 4): KD vs KD + VEM on logits, with the ports' Langevin step (50)
  and a small one (1; logits are not images in [-1, 1]).

Metrics (with a kdlab classifier as the FID/KID/IS feature extractor, identified by hash): FID, KID,
IS, variance of the Laplacian, fidelity to the teacher (FID between student and teacher samples, and
the MSE to the teacher on the evaluation latents); energy-gap and |E| curves from ``metrics.jsonl``;
sample grids of every row for the same z.

Scales:

* ``small`` (2 CPU cores, about an hour): Fashion-MNIST; metric classifier LeNet (16, 32, fc 256);
  teacher DCGAN d = 32 (BCE game, 2,400 steps); students d = 4 and 8, 1,200 steps of batch 64 (Adam 1e-3,
  cosine); the EBM with C = 8 (A.3's Horse -> Zebra width; C = 32 costs ~4x more on CPU), K = 10, the
  ports' eta = 50, sigma = 0.005; CRD with k = 1,024 negatives; 5,000 samples per evaluation; 3 seeds
  (lambda sensitivity: seed 0).
* ``full`` (a GPU): teacher 25 epochs, students 10 epochs, C = 32, CRD k = 16,384, 10,000 samples;
  ``data.name=cifar10`` (or an image folder of CelebA with ``data.image_size=64``) runs it unchanged
  where the data exists.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console

from kdlab.experiments import EXPERIMENTS, grid

#: the metric classifier of FID/KID/IS (the settings of gan-compression-sweep's init run clf)
_METRIC_CLF = {
    "small": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "trainer.epochs=2", "data.val_size=2000",
              "optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0.0"],
    "full": ["trainer.accelerator=auto", "model.name=lenet", "trainer.epochs=15", "data.val_size=5000", "optim.name=adam",
             "optim.lr=0.001", "optim.weight_decay=0.0"],
}

NAME = "vem-ablation"
#: the rows of the generator ablation and their labels
ROWS = {"base": "MSE (base)", "vid": "MSE + VID", "crd": "MSE + CRD", "vem": "MSE + VEM"}
CLF_ROWS = {"kd": "CE + KD", "vem": "CE + KD + VEM (eta 50)", "vem-eta1": "CE + KD + VEM (eta 1)"}
#: paper Table 6 values of lambda_MI
LAMBDAS = (0.005, 0.05, 0.1, 0.2)

SCALES: Dict[str, Dict[str, Any]] = {
    "small": {
        "seeds": [0, 1, 2],
        "classifier": _METRIC_CLF["small"],
        "teacher_d": 32,
        "teacher": ["players.disc_d=16", "trainer.epochs=3", "trainer.limit_train_batches=800"],
        "student_ds": [4, 8],
        "student": ["trainer.epochs=3", "trainer.limit_train_batches=400", "eval.n_samples=5000",
                    "trainer.log_every_n_steps=20"],
        "lam": 0.1,
        "vem": {"channels": 8, "step_size": 50.0},  # the ports' eta (the default is sec. 5.3's 100)
        "crd": {"k": 1024},
        "lambda_d": 4,
        "ebm_lr_check": 1e-3,
        "clf": ["trainer.log_every_n_steps=16", "eval.latency=false"],
    },
    "full": {
        "seeds": [0, 1, 2],
        "classifier": _METRIC_CLF["full"],
        "teacher_d": 32,
        "teacher": ["trainer.accelerator=auto", "players.disc_d=32", "trainer.epochs=25"],
        "student_ds": [4, 8],
        "student": ["trainer.accelerator=auto", "trainer.epochs=10", "eval.n_samples=10000",
                    "trainer.log_every_n_steps=50"],
        "lam": 0.1,
        "vem": {"channels": 32, "step_size": 50.0},
        "crd": {"k": 16384},
        "lambda_d": 4,
        "ebm_lr_check": 1e-3,
        "clf": ["trainer.accelerator=auto", "eval.latency=false"],
    },
}

_COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "eval.latency=false"]
_CLASSIFIER_KEYS = ("trainer.", "data.", "out_dir=", "seed=")


def gen_terms(row: str, sc: Dict[str, Any], lam: Optional[float] = None, ebm_lr: Optional[float] = None) -> Dict[str, Any]:
    """``objective.student`` of a generator row: MSE plus the row's add-on weighted lambda (``ebm_lr``: VEM's EBM rate)."""
    terms: Dict[str, Any] = {"mse": {"weight": 1.0}}
    w = sc["lam"] if lam is None else lam
    if row == "vid":
        terms["vid"] = {"weight": w}
    elif row == "crd":
        terms["crd"] = {"weight": w, **sc["crd"]}
    elif row == "vem":
        terms["vem"] = {"weight": w, **sc["vem"], **({"lr": ebm_lr} if ebm_lr is not None else {})}
    elif row != "base":
        raise KeyError(row)
    return terms


def clf_terms(row: str, lam: float) -> Dict[str, Any]:
    """``objective.student`` of a classifier row (the demo's CE + KD at T = 4, plus VEM on logits)."""
    terms: Dict[str, Any] = {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}}
    if row == "vem":
        terms["vem"] = {"weight": lam, "step_size": 50.0}
    elif row == "vem-eta1":
        terms["vem"] = {"weight": lam, "step_size": 1.0}
    elif row != "kd":
        raise KeyError(row)
    return terms


@EXPERIMENTS.register(NAME, help="VEM vs VID vs CRD add-ons on DCGAN compression and on KD (Kang et al. Tables 4-6)")
def vem_ablation(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Train every cell (finished cells of the same config are reused) and write ``out_dir/vem-ablation/report.md``.

    ``overrides`` apply to every generator run; ``trainer.*``, ``data.*``, ``out_dir``, ``seed`` also to
    the metric classifier and the classifier pair.

    Raises: ValueError: unknown scale (lists small, full).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    sc = SCALES[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    console = Console(stderr=True)
    out_dir = Path(out_dir)
    user = list(overrides)
    clf_user = [o for o in user if o.startswith(_CLASSIFIER_KEYS)]
    base = [f"out_dir={out_dir}", *_COMMON]
    metric = grid.run_cell([{"method": "teacher", "label": "metric classifier"}],
                           base + sc["classifier"] + ["name=vem-metric-classifier", "data.batch_size=128", "seed=0"]
                           + clf_user, console)
    extractor = metric / "teacher.safetensors"
    td = sc["teacher_d"]
    teacher = grid.run_cell([grid.recipe("gan_teacher")],
                            base + [f"model.kwargs.d={td}", f"eval.extractor={extractor}", "name=vem-gan-teacher",
                                    f"label=teacher DCGAN d={td}", "seed=0"] + sc["teacher"] + user, console)

    def student(row: str, d: int, seed: int, lam: Optional[float] = None, ebm_lr: Optional[float] = None) -> Path:
        tag = (f"-lam{lam:g}" if lam is not None else "") + (f"-ebmlr{ebm_lr:g}" if ebm_lr is not None else "")
        return grid.run_cell([grid.recipe("gan_student_mse")], base + [
            f"teacher.checkpoint={teacher}", f"model.kwargs.d={d}", f"eval.extractor={extractor}",
            "players.latents=pool", f"objective.student={json.dumps(gen_terms(row, sc, lam, ebm_lr))}", f"seed={seed}",
            f"name=vem-{row}{tag}-d{d}-s{seed}", f"label={ROWS[row]}{f' lambda={lam:g}' if lam is not None else ''}"
            f"{f' EBM lr={ebm_lr:g}' if ebm_lr is not None else ''} d={d}",
        ] + sc["student"] + user, console)

    cells: Dict[int, Dict[str, List[Path]]] = {}
    for seed in seeds:
        for d in sc["student_ds"]:
            for row in ROWS:
                cells.setdefault(d, {}).setdefault(row, []).append(student(row, d, seed))
    lam_cells: Dict[float, Path] = {}
    for lam in LAMBDAS:
        lam_cells[lam] = (cells[sc["lambda_d"]]["vem"][0] if lam == sc["lam"]
                          else student("vem", sc["lambda_d"], seeds[0], lam))
    # the EBM at 10x the paper's learning rate: does a faster-learning q(t | s) change the student?
    lr_cell = student("vem", sc["lambda_d"], seeds[0], ebm_lr=sc["ebm_lr_check"])

    clf_teacher = grid.run_cell([grid.recipe("demo_teacher")], base + ["name=vem-clf-teacher"] + clf_user, console)
    clf: Dict[str, List[Path]] = {}
    for seed in seeds:
        for row in CLF_ROWS:
            clf.setdefault(row, []).append(grid.run_cell([grid.recipe("demo_kd")], base + [
                f"teacher.checkpoint={clf_teacher}", f"objective.student={json.dumps(clf_terms(row, sc['lam']))}",
                f"seed={seed}", f"data.subset_seed={seed}", f"name=vem-clf-{row}-s{seed}", f"label={CLF_ROWS[row]}",
            ] + sc["clf"] + clf_user, console))
    from kdlab.experiments.vem_report import write

    return write(out_dir / NAME, scale, seeds, sc, teacher, metric, cells, lam_cells, lr_cell, clf_teacher, clf)
