"""VEM on image-to-image GAN compression (Kang et al., NeurIPS 2022, Tables 1, 2 and 4):
``kdlab reproduce vem-table1 | vem-table2 | vem-table4``.

The paper's claim: the energy-based MI add-on (VEM, eq. 10 ``L^s = L_algo - lambda_MI I~(T; S)``) improves
every compression algorithm it is added to, and beats the other MI add-ons (VID's factorised Gaussian,
CRD's contrastive bound; Table 4). Each algorithm runs alone and with each add-on on equal terms: the same
frozen teacher, student architecture, student updates, schedule, data and seeds; the add-on acts on the
output images with Table 6's lambda_MI. On the paired task VEM runs in sec. 5.3's paired mode (``target:
ground_truth``: the MI between the student's output and the real output image); VID and CRD keep the
teacher's image (their terms have no ground-truth mode). Langevin: sec. 5.3's eta 100 (the default; the
stand-ins are for Edges -> Shoes, Horse -> Zebra and CelebA, not Cityscapes/FFHQ where the paper uses 50).

* ``vem-table1`` (Table 1, Pix2Pix): OMGD on the paired task ``edges2fashion`` (the offline stand-in for
  Edges -> Shoes; the domain classifier's accuracy on the translations stands in for Cityscapes' mIoU),
  lambda_MI 0.1;
* ``vem-table2`` (Tables 2 and 4, CycleGAN): OMGD (0.1), CAT (0.005) and GAN-Compression (0.1) on the
  unpaired task ``fashion2digits`` (the stand-in for Horse -> Zebra);
* ``vem-table3`` (Table 3, SAGAN): GCC (0.1) on an unconditional SAGAN teacher (Fashion-MNIST, the
  stand-in for CelebA): ``gan-compression`` with the hinge game against GCC's gated SAGAN discriminator
  (from scratch) and the ``gcc`` term on the features of the teacher run's discriminator (GCC's D^t, eq. 17,
  frozen); student width 52/64 of the teacher's (Table 3's 34% MAC cut); and CAGC (0.05; Table 3's StyleGAN2
  row) on the same SAGAN teacher: its output-only masked L1 3 + LPIPS 3 in the host's hinge game, D started
  from the teacher's, width 0.3 of the teacher's (Table 3's 90.91% MAC cut);
* ``vem-table4`` (Table 4): the MI ablation over every algorithm of tables 1-3 (their cells are reused).

Teachers: ``pix2pix_edges2fashion`` (U-Net ngf 32), ``cyclegan_fashion2digits`` (ResNet ngf 32) and
``sagan_teacher`` (ngf 32 at small scale); the output domain's classifiers ``fashion_classifier`` / ``digits_classifier`` are the FID/KID extractors
(identified by hash in every report) and the perceptual terms' feature networks.

Scales:

* ``small`` (2 CPU cores): 200 images per class; the teachers of their recipes (Pix2Pix: 500 per class,
  10 epochs; CycleGAN: 200 per class, 5 epochs); students at 1/4 of the teacher's width (OMGD, CAT) or 1/2
  (GAN-Compression), as the paper's 64 -> 16 / 32, with the teacher's discriminator width (ndf 32: the
  students' PatchGAN would otherwise cost more than teacher and student together); batch 16 for 8 epochs
  (paired: 1,000 student updates) or 4 (unpaired: 500, to fit 36 runs in the hour), Adam 2e-4 decaying linearly; the EBM with C = 8,
  CRD with k = 1,024; 3 seeds. SAGAN (table 3, ~50 min): teacher ngf 32 on 1,000 images per
  class for 25 epochs (3,900 updates of batch 64), students ngf 26 for 4 epochs of batch 64 (625 updates) at Adam 1e-3 (the recipe's 1e-4 leaves them at noise,
  FID ~510, after 625 updates; 1e-3 reached FID 173 in 2 epochs).
* ``full`` (a GPU): the teachers' whole training subsets, 20 student epochs, C = 32, k = 16,384. The folder
  tasks (``paired-folder:``, ``unpaired-folder:``, 256 px) run with ``data.name=...`` overrides where the
  public data exist.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import OmegaConf
from rich.console import Console

from kdlab.experiments import EXPERIMENTS, grid

#: the MI add-ons of every table, in report order
ADDONS = {"alone": "alone", "vid": "+ VID", "crd": "+ CRD", "vem": "+ VEM"}
#: the output domains: teacher recipe, classifier recipe
TASKS = {"paired": ("pix2pix_edges2fashion", "fashion_classifier"),
         "unpaired": ("cyclegan_fashion2digits", "digits_classifier"),
         "unconditional": ("sagan_teacher", "fashion_classifier")}
#: algorithm -> (label, student recipe, task, lambda_MI of Table 6, student width as a fraction of the teacher's)
ALGOS = {
    "omgd-paired": ("OMGD", "i2i_omgd_frozen", "paired", 0.1, 0.25),  # one frozen teacher for every add-on
    "omgd": ("OMGD", "i2i_omgd_unpaired", "unpaired", 0.1, 0.25),
    "cat": ("CAT", "i2i_cat", "unpaired", 0.005, 0.25),
    "gan-compression": ("GAN-Compression", "i2i_gan_compression", "unpaired", 0.1, 0.5),
    "gcc": ("GCC", "gcc_sagan", "unconditional", 0.1, 52 / 64),
    "cagc": ("CAGC", "cagc_sagan", "unconditional", 0.05, 0.3),
}
TABLES = {"vem-table1": ["omgd-paired"], "vem-table2": ["omgd", "cat", "gan-compression"], "vem-table3": ["gcc", "cagc"],
          "vem-table4": ["omgd-paired", "omgd", "cat", "gan-compression", "gcc", "cagc"]}
#: cells are named after the first table that holds the algorithm, so that table 4 reuses them
HOME = {algo: next(t for t, algos in TABLES.items() if algo in algos) for algo in ALGOS}

SCALES: Dict[str, Dict[str, Any]] = {
    "small": {
        "seeds": [0, 1, 2],
        "classifier": ["trainer.epochs=3"],
        "teacher": {"paired": [], "unpaired": ["data.n_per_class=200", "trainer.epochs=5"],
                    "unconditional": ["model.kwargs.ngf=32", "players.disc_d=32", "data.n_per_class=1000",
                                      "trainer.epochs=25", "eval.n_samples=5000"]},
        "task": {"paired": ["data.n_per_class=200", "data.max_test=2000", "trainer.epochs=8", "players.ndf=32"],
                 "unpaired": ["data.n_per_class=200", "data.max_test=1000", "trainer.epochs=4", "players.ndf=32"],
                 "unconditional": ["data.n_per_class=1000", "data.max_test=5000", "trainer.epochs=4",
                                   "eval.n_samples=5000", "data.batch_size=64", "optim.lr=0.001"]},
        "student": ["data.batch_size=16", "trainer.log_every_n_steps=25"],
        "vem": {"channels": 8},
        "crd": {"k": 1024},
    },
    "full": {
        "seeds": [0, 1, 2],
        "classifier": ["trainer.accelerator=auto"],
        "teacher": {t: ["trainer.accelerator=auto", "data.n_per_class=null", "trainer.epochs=40"]
                    for t in ("paired", "unpaired", "unconditional")},
        "task": {t: ["data.n_per_class=null", "trainer.epochs=20"] for t in ("paired", "unpaired", "unconditional")},
        "student": ["trainer.accelerator=auto", "trainer.log_every_n_steps=100"],
        "vem": {"channels": 32},
        "crd": {"k": 16384},
    },
}

_COMMON = ["trainer.progress=false", "trainer.tensorboard=false", "eval.latency=false"]
_SHARED_KEYS = ("trainer.", "out_dir=", "seed=")
#: term keys that name a feature network (a classifier run)
_EXTRACTOR_TERMS = ("perceptual", "style", "lpips", "cagc")


#: the tasks whose VEM add-on pairs the student's output with the real output (sec. 5.3)
PAIRED_VEM = {"paired": {"target": "ground_truth"}}


def student_terms(recipe: str, addon: str, lam: float, sc: Dict[str, Any], classifier: Path,
                  task: str = "unpaired") -> Dict[str, Any]:
    """``objective.student`` of a cell: the algorithm's recipe terms (feature networks = the output domain's
    classifier) plus the add-on on the output images weighted ``lam`` (VEM on a ``paired`` task: against the
    real output image, sec. 5.3)."""
    raw = OmegaConf.to_container(OmegaConf.load(grid.recipe(recipe)))
    terms: Dict[str, Any] = dict(raw["objective"]["student"])
    for name in _EXTRACTOR_TERMS:
        if name in terms and "extractor" in terms[name]:
            terms[name] = {**terms[name], "extractor": str(classifier)}
    if addon == "vid":
        terms["vid"] = {"weight": lam}
    elif addon == "crd":
        terms["crd"] = {"weight": lam, **sc["crd"]}
    elif addon == "vem":
        terms["vem"] = {"weight": lam, **sc["vem"], **PAIRED_VEM.get(task, {})}
    elif addon != "alone":
        raise KeyError(addon)
    return terms


def run_table(name: str, out_dir: Path, scale: str, seeds: Optional[List[int]] = None,
              overrides: Sequence[str] = ()) -> Path:
    """Train every cell of table ``name`` (finished cells of the same config are reused) and write
    ``out_dir/<name>/report.md``.

    ``overrides`` apply to every student; ``trainer.*``, ``out_dir``, ``seed`` also to teachers and classifiers.

    Raises: ValueError: unknown scale (lists small, full).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    sc = SCALES[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    console = Console(stderr=True)
    out_dir = Path(out_dir)
    user = list(overrides)
    shared = [o for o in user if o.startswith(_SHARED_KEYS)]
    base = [f"out_dir={out_dir}", *_COMMON]
    classifiers: Dict[str, Path] = {}
    teachers: Dict[str, Path] = {}
    cells: Dict[str, Dict[str, List[Path]]] = {}
    for algo in TABLES[name]:
        label, recipe, task, lam, width = ALGOS[algo]
        t_recipe, c_recipe = TASKS[task]
        if task not in teachers:
            classifiers[task] = grid.run_cell([grid.recipe(c_recipe)], base + sc["classifier"] + ["seed=0"] + shared,
                                              console)
            teachers[task] = grid.run_cell([grid.recipe(t_recipe)], base + sc["teacher"][task] + [
                f"eval.extractor={classifiers[task]}", "seed=0"] + shared, console)
        t_cfg = grid.resolve([teachers[task] / "config.yaml"])
        kw = {**dict(t_cfg.model.kwargs), "ngf": max(8, int(round(t_cfg.model.kwargs.ngf * width)))}
        kw.pop("dropout", None)
        # the latent game, a fixed z per row (CRD's memory needs it): GCC's D^t = the teacher run's discriminator
        # (frozen) and the student's gated D of the teacher's width from scratch; CAGC's D started from the teacher's
        start = "teacher_disc" if algo == "gcc" else "disc_init"
        game = ([f"players.{start}={teachers[task]}", f"players.disc_d={t_cfg.players.disc_d}", "players.latents=pool"]
                if task == "unconditional" else [])
        for addon, a_label in ADDONS.items():
            for seed in seeds:
                terms = student_terms(recipe, addon, lam, sc, classifiers[task], task)
                cells.setdefault(algo, {}).setdefault(addon, []).append(grid.run_cell([grid.recipe(recipe)], base + [
                    f"teacher.checkpoint={teachers[task]}", f"eval.extractor={classifiers[task]}",
                    f"model.kwargs={json.dumps(kw)}", f"objective.student={json.dumps(terms)}", f"seed={seed}",
                    f"data.subset_seed={seed}", f"name={HOME[algo]}-{algo}-{addon}-s{seed}",
                    f"label={label} {a_label} (ngf {kw['ngf']})",
                ] + game + sc["student"] + sc["task"][task] + user, console))
    from kdlab.experiments.vem_i2i_report import write

    return write(out_dir / name, name, scale, seeds, sc, teachers, classifiers, cells)


def _register(name: str, help_: str) -> None:
    @EXPERIMENTS.register(name, help=help_)
    def _table(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
        return run_table(name, out_dir, scale, seeds, overrides)

    _table.__doc__ = f"``kdlab reproduce {name}``: see :func:`run_table`."


_register("vem-table1", "VEM on Pix2Pix compression: OMGD alone / + VID / + CRD / + VEM on edges2fashion (Kang et al. Table 1)")
_register("vem-table2", "VEM on CycleGAN compression: OMGD, CAT, GAN-Compression alone / + VID / + CRD / + VEM on "
                        "fashion2digits (Kang et al. Tables 2, 4)")
_register("vem-table3", "VEM on unconditional GAN compression: GCC alone / + VID / + CRD / + VEM on SAGAN (Kang et al. "
                        "Table 3)")
_register("vem-table4", "VEM vs VID vs CRD over every algorithm of tables 1-3 (Kang et al. Table 4)")
