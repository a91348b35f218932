"""MosaicKD (Fang et al., NeurIPS 2021) against its baselines on real out-of-domain data:
``kdlab reproduce mosaickd``.

The user has a trained teacher but not its data, only unlabelled images of another domain. Every row
distils the same student from the same teacher for the same number of student updates, schedule and
seeds, and is evaluated on the teacher's test set:

* ``indomain``: KD on as many of the teacher's own training images (the reference the OOD rows chase);
* per OOD source: ``kd`` (KD on the OOD images), ``fitnet`` (KD + FitNets hints on them),
  ``balanced`` (KD on a class-balanced half of them, selected by the teacher's predictions: Table 5's
  "Balanced", Nayak et al. 2021; twice the epochs, so the same updates), ``mosaickd`` (generator +
  patch discriminator + the OOD images);
* data-free (no images at all): ``dfad`` and ``dafl``.

Every student row uses the student objective of MosaicKD's code, KL(p_t || p_s) at T = 1 (plus hints
for ``fitnet``), so rows differ only in their transfer data. Ablations on the first OOD source, seed 0,
with half the epochs (``ablation_epochs``; each ablation is compared within itself): the patch stride
of the discriminator's last layer (supplement Table 4) and the three regularisation settings of Fig. 1
(no D, full-image D, patch D) with their sample grids side by side.

Scales:

* ``small`` (2 CPU cores, about an hour): Fashion-MNIST LeNet teacher (3 epochs, ~91%), student LeNet
  with channels (16, 32) and fc 256; OOD sources ``mnist-digits`` (4,000 real MNIST digits) and
  ``skimage-patches`` (4,000 grey 28 x 28 tiles of the photographs shipped with scikit-image);
  batch 128, 32 student updates per epoch, 12 epochs (384 updates; ablations 6 epochs); student Adam
  1e-3 with a cosine schedule for every row (the published SGD 0.1 is for 200 epochs); generators
  (MosaicKD, DFAD, DAFL) at half the published width (``ngf`` 32: the 28 x 28 convolutions of the
  published width cost about 7 GMAC per batch of 128, more than the LeNet teacher); 3 seeds.
* ``full``: the paper's CIFAR-100 setting (wrn_40_2 teacher -> wrn_16_1 student, CIFAR-10 OOD, batch
  256, 200 epochs, SGD 0.1); runs unchanged where CIFAR-10/100 exist (torchvision downloads).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid

#: supplement Table 5 (ImageNet-32, resnet-56 -> resnet-20, Places365 as OOD data): context only
PAPER_T5 = {"teacher": 41.28, "indomain": 32.18, "kd": 21.76, "balanced": 21.09, "fitnet": 21.45, "mosaickd": 26.51}
#: supplement Table 4 (CIFAR-100, wrn40-2 -> wrn16-1), student accuracy vs the final stride
PAPER_T4 = {1: 61.01, 2: 59.56, 3: 42.35, 4: 46.07}

KL_T1 = {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 1.0}}  # no labels: ce off explicitly
LABELS = {
    "indomain": "KD on in-domain images (reference)",
    "kd": "KD on OOD images",
    "fitnet": "KD + FitNets hints on OOD images",
    "balanced": "KD on a class-balanced OOD subset",
    "mosaickd": "MosaicKD (generator + patch D + OOD)",
    "dfad": "DFAD (data-free)",
    "dafl": "DAFL (data-free)",
}

#: supplement Fig. 1's other regularisers: none (no discriminator: "naively maximise the teacher's confidence")
#: and a full-image discriminator ("trapped by the class semantics of OOD data")
REGULARIZERS = {
    "none": ["players.discriminator=null", "objective.generator.gan.weight=0", "objective.discriminator.gan.weight=0"],
    "image": ["players.discriminator=dcgan", "players.disc_kwargs={}"],
}

SCALE: Dict[str, Dict[str, Any]] = {
    "small": {
        "seeds": [0, 1, 2],
        "common": ["data.val_size=1000", "data.max_test=2000", "eval.latency=false", "eval.noise_sigmas=[0.0]",
                   "trainer.progress=false", "trainer.tensorboard=false"],
        "teacher": [],
        "student": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "data.batch_size=128",
                    "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0.0", "optim.scheduler=cosine"],
        "epochs": 12,
        "ablation_epochs": 6,
        "ood_n": 4000,
        "hint_layers": "[[pool2, pool2]]",
        "sources": {
            "mnist-digits": ["data.transfer=mnist-digits"],
            "skimage-patches": ["data.transfer=skimage-patches", "data.transfer_channels=1", "data.transfer_size=28"],
        },
        "strides": [1, 2, 3, 4],
        "generator": ["players.generator_kwargs={ngf: 32}"],  # half the published width: 4x fewer MACs on CPU
    },
    "full": {
        "seeds": [0, 1, 2],
        "common": ["data.name=cifar100", "eval.latency=false", "trainer.progress=false"],
        "teacher": ["model.name=wrn_40_2", "optim.name=sgd", "optim.lr=0.1", "optim.weight_decay=0.0001",
                    "data.batch_size=128", "trainer.epochs=200", "data.augment=true"],
        "student": ["model.name=wrn_16_1", "model.kwargs={}", "data.batch_size=256", "optim.name=sgd", "optim.lr=0.1",
                    "optim.momentum=0.9", "optim.weight_decay=0.0001", "optim.scheduler=cosine"],
        "epochs": 200,
        "ablation_epochs": 200,
        "ood_n": 50000,
        "hint_layers": "[[block2, block2]]",
        "sources": {"cifar10": ["data.transfer=cifar10"]},
        "strides": [1, 2, 3, 4],
        "generator": [],
    },
}


def _steps_per_epoch(sc: Dict[str, Any]) -> int:
    batch = int(next(o for o in sc["student"] if o.startswith("data.batch_size=")).split("=")[1])
    return -(-sc["ood_n"] // batch)


def _row(row: str, source: Optional[str], sc: Dict[str, Any]) -> tuple:
    """(recipe, overrides) of one row (without seed, name, teacher and the common keys)."""
    epochs, steps = sc["epochs"], _steps_per_epoch(sc)
    src = sc["sources"].get(source, []) + [f"data.transfer_n={sc['ood_n']}"] if source else []
    terms = f"objective.student={json.dumps(KL_T1)}"
    if row == "indomain":
        return "mosaickd_kd", [terms, f"data.n_per_class={sc['ood_n'] // 10}", f"trainer.epochs={epochs}",
                               "data.transfer=train"]
    if row == "kd":
        return "mosaickd_kd", [terms, *src, f"trainer.epochs={epochs}"]
    if row == "fitnet":  # hints weight 1 on an MSE averaged over elements (kdlab's hints term)
        return "mosaickd_kd", [terms, "objective.student.hints.weight=1.0", f"objective.student.hints.layers={sc['hint_layers']}",
                               *src, f"trainer.epochs={epochs}"]
    if row == "balanced":
        return "mosaickd_kd", [terms, *src, "data.transfer_select=balanced", f"data.transfer_k={sc['ood_n'] // 2}",
                               f"trainer.epochs={2 * epochs}"]
    if row == "mosaickd":  # the OOD set is the synthesizer's real data
        return "mosaickd", [terms, *[o.replace("data.transfer=", "data.synth_real=") for o in src],
                            f"trainer.epochs={epochs}", *sc["generator"]]
    if row in ("dfad", "dafl"):  # data-free: as many updates per epoch as the OOD rows
        return row, ["data.transfer=synth", f"data.steps_per_epoch={steps}", f"trainer.epochs={epochs}",
                     "players.latent_dim=100", *sc["generator"]]
    raise KeyError(row)


@EXPERIMENTS.register("mosaickd", help="MosaicKD vs KD/FitNets/balanced on OOD data and DFAD/DAFL, real OOD sets")
def mosaickd(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Teacher, then every row x OOD source x seed, then the ablations; writes ``out_dir/mosaickd/report.md``."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    out_dir = Path(out_dir)
    base = [f"out_dir={out_dir}", *sc["common"]]
    teacher = grid.run_cell([grid.recipe("mosaickd_teacher")], [*base, *sc["teacher"], *overrides])
    cells: Dict[str, Dict[str, List[Path]]] = {}

    def run(row: str, source: Optional[str], seed: int, extra: Sequence[str] = (), tag: str = "") -> Path:
        recipe, ov = _row(row, source, sc)
        name = f"mosaickd-{row}{'-' + source if source else ''}{tag}-s{seed}"
        return grid.run_cell([grid.recipe(recipe)], [
            *base, *sc["student"], *ov, f"teacher.checkpoint={teacher}", f"seed={seed}", f"data.subset_seed={seed}",
            f"name={name}", f"label={LABELS[row]}", *extra, *overrides])

    for seed in seeds:
        cells.setdefault("indomain", {}).setdefault("-", []).append(run("indomain", None, seed))
        for row in ("dfad", "dafl"):
            cells.setdefault(row, {}).setdefault("-", []).append(run(row, None, seed))
        for source in sc["sources"]:
            for row in ("kd", "fitnet", "balanced", "mosaickd"):
                cells.setdefault(row, {}).setdefault(source, []).append(run(row, source, seed))
    first = next(iter(sc["sources"]))
    short = [f"trainer.epochs={sc['ablation_epochs']}"]
    strides = {s: run("mosaickd", first, seeds[0], [*short, f"players.disc_kwargs={{final_stride: {s}}}"], f"-stride{s}")
               for s in sc["strides"]}
    regs = {r: run("mosaickd", first, seeds[0], [*short, *ov], f"-{r}") for r, ov in REGULARIZERS.items()}
    regs["patch"] = strides[1]
    from kdlab.experiments.mosaickd_report import write

    return write(out_dir / "mosaickd", scale, seeds, teacher, cells, strides, regs, list(sc["sources"]))
