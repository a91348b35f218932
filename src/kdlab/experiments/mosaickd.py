"""MosaicKD (Fang et al., NeurIPS 2021) against its baselines on real out-of-domain data:
``kdlab reproduce mosaickd``.

The user has a trained teacher but not its data, only unlabelled images of another domain. Every row
distils the same student from the same teacher for the same number of student updates, schedule and
seeds, and is evaluated on the teacher's test set:

* ``indomain``: KD on as many of the teacher's own training images (the reference the OOD rows chase);
* per OOD source: ``kd`` (KD on the OOD images), ``fitnet`` (KD + FitNets hints on them),
  ``balanced`` (KD on a class-balanced half of them, selected by the teacher's predictions: Table 5's
  "Balanced", Nayak et al. 2021; twice the epochs, so the same updates), ``mosaickd`` (generator +
  patch discriminator + the OOD images), ``mosaickd-entropy`` (MosaicKD on the half of them with the
  highest teacher entropy, Algorithm 1; twice the epochs) and ``frozen-g`` (the control that isolates
  mosaicking: the OOD images plus the images of a frozen, untrained generator, no discriminator);
* data-free (no images at all): ``dfad`` and ``dafl``.

Budgets are counted in student updates. An epoch of the MosaicKD rows is the published one
(zju-vipa/MosaicKD ``kd_mosaic.py``: per OOD batch one discriminator step, one generator step and 5
student steps on fresh OOD batches; ``players.epoch_pass: discriminator``), so ``epochs`` below are MosaicKD
epochs of ``5 * ceil(ood_n / batch)`` student updates; the KD rows run 5 times as many epochs of their loader
and the data-free rows 5 times as many steps per epoch, so every row gets the same updates.

Every student row uses the student objective of MosaicKD's code, KL(p_t || p_s) at T = 1 (plus hints
for ``fitnet``), so rows differ only in their transfer data. Ablations on the first OOD source, seed 0,
with half the epochs (``ablation_epochs``; each ablation is compared within itself): the patch stride
of the discriminator's last layer (supplement Table 4) and the three regularisation settings of Fig. 1
(no D, full-image D, patch D) with their sample grids side by side.

Scales:

* ``small`` (2 CPU cores, about two hours, mostly the three generator rows): Fashion-MNIST LeNet teacher
  (3 epochs, ~91%), student LeNet with channels (16, 32) and fc 256; OOD sources ``mnist-digits`` (4,000 real
  MNIST digits) and ``skimage-patches`` (4,000 grey 28 x 28 tiles of the photographs shipped with
  scikit-image); batch 128, 2 MosaicKD epochs of 160 student updates (320 updates; KD rows: 10 epochs of 32;
  ablations 1 epoch); student Adam 1e-3 with a cosine schedule for every row (the published SGD 0.1 is for 200
  epochs); generators (MosaicKD, DFAD, DAFL) at half the published width (``ngf`` 32: the 28 x 28 convolutions
  of the published width cost about 7 GMAC per batch of 128, more than the LeNet teacher); 3 seeds.
* ``full``: the paper's CIFAR-100 setting (wrn_40_2 teacher -> wrn_16_1 student, CIFAR-10 OOD, batch
  256, 200 MosaicKD epochs = 196,000 student updates as the published command, SGD 0.1); runs unchanged
  where CIFAR-10/100 exist (torchvision downloads).
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
    "mosaickd-entropy": "MosaicKD on the highest-entropy half (Algorithm 1)",
    "frozen-g": "Control (OOD + frozen untrained generator)",
    "dfad": "DFAD (data-free)",
    "dafl": "DAFL (data-free)",
}

#: supplement Fig. 1's other regularisers: none (no discriminator: "naively maximise the teacher's confidence")
#: and a full-image discriminator ("trapped by the class semantics of OOD data")
REGULARIZERS = {
    "none": ["players.discriminator=null", "objective.generator.gan.weight=0", "objective.discriminator.gan.weight=0"],
    "image": ["players.discriminator=dcgan", "players.disc_kwargs={}"],
}

#: student steps per OOD batch of the published MosaicKD loop (``players.synth_every``): KD rows run this many
#: times the epochs so that every row gets the same student updates
PASSES = 5
#: the control that isolates mosaicking: no discriminator, a generator that is never trained
FROZEN_G = ["players.train_generator=false", *REGULARIZERS["none"]]

SCALE: Dict[str, Dict[str, Any]] = {
    "small": {
        "seeds": [0, 1, 2],
        "common": ["data.val_size=1000", "data.max_test=2000", "eval.latency=false", "eval.noise_sigmas=[0.0]",
                   "trainer.progress=false", "trainer.tensorboard=false"],
        "teacher": [],
        "student": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "data.batch_size=128",
                    "optim.name=adam", "optim.lr=0.001", "optim.weight_decay=0.0", "optim.scheduler=cosine"],
        "epochs": 2,  # MosaicKD epochs (160 student updates each)
        "ablation_epochs": 1,
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
    """(recipe, overrides) of one row (without seed, name, teacher and the common keys); every row runs
    ``sc["epochs"] * PASSES * ceil(ood_n / batch)`` student updates."""
    steps = _steps_per_epoch(sc)
    mosaic_epochs, epochs = sc["epochs"], PASSES * sc["epochs"]  # published MosaicKD epochs; loader passes
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
    # the OOD set is the synthesizer's real data; an epoch = PASSES student steps per OOD batch (published)
    mosaic = [terms, *[o.replace("data.transfer=", "data.synth_real=") for o in src], f"players.synth_every={PASSES}",
              "players.epoch_pass=discriminator", *sc["generator"]]
    if row == "mosaickd":
        return "mosaickd", [*mosaic, f"trainer.epochs={mosaic_epochs}"]
    if row == "mosaickd-entropy":  # Algorithm 1: the half of highest teacher entropy, twice the epochs
        return "mosaickd", [*mosaic, "data.transfer_select=entropy", f"data.transfer_k={sc['ood_n'] // 2}",
                            f"trainer.epochs={2 * mosaic_epochs}"]
    if row == "frozen-g":
        return "mosaickd", [*mosaic, *FROZEN_G, f"trainer.epochs={mosaic_epochs}"]
    if row in ("dfad", "dafl"):  # data-free: as many updates per epoch as the MosaicKD rows
        return row, ["data.transfer=synth", f"data.steps_per_epoch={PASSES * steps}", f"trainer.epochs={mosaic_epochs}",
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
            for row in ("kd", "fitnet", "balanced", "mosaickd", "mosaickd-entropy", "frozen-g"):
                cells.setdefault(row, {}).setdefault(source, []).append(run(row, source, seed))
    first = next(iter(sc["sources"]))
    short = [f"trainer.epochs={sc['ablation_epochs']}"]
    strides = {s: run("mosaickd", first, seeds[0], [*short, f"players.disc_kwargs={{final_stride: {s}}}"], f"-stride{s}")
               for s in sc["strides"]}
    regs = {r: run("mosaickd", first, seeds[0], [*short, *ov], f"-{r}") for r, ov in REGULARIZERS.items()}
    regs["patch"] = strides[1]
    from kdlab.experiments.mosaickd_report import write

    return write(out_dir / "mosaickd", scale, seeds, teacher, cells, strides, regs, list(sc["sources"]))
