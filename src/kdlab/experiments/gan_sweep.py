"""``kdlab reproduce gan-compression-sweep``: the compression limit of GAN distillation
(Aguinaldo et al. 2019, sec. 3-4 and the "limit of compression" discussion).

One command trains, in order (each an ordinary run directory under ``out_dir``; a finished run with
the same resolved config is reused, not retrained):

1. the metric classifier (``gan-sweep-classifier``): a kdlab LeNet on the same data set, whose
   penultimate layer / softmax serve FID, KID and IS (Inception-v3 weights are not available offline;
   ``papers/NOTES.md``); its sha256 is in every report;
2. the teacher GAN at depth scale factor ``teacher_d`` (``gan-sweep-teacher``);
3. MSE students (Fig. 3) at each ``student_ds`` and joint-loss students (Fig. 4) at each ``joint_ds``,
   all from the same frozen teacher;

then writes ``out_dir/gan-compression-sweep/report.md`` with FID/KID/IS/VoL, params/MACs,
compression ratio and fidelity to the teacher per generator, plots of each metric against the
parameter count, and one sample grid: real images, the teacher and every student for the same z.

Scales (estimated from per-step timings measured with one CPU thread on this 2-core machine while
other jobs ran: teacher GAN step (G d=32 + D d=16, batch 64) 0.114 s; MSE student step (d=4, teacher
d=32) 0.034 s; joint student step (WGAN-GP critic d=32, 3 critic steps per student step) 0.155 s, less
with the critic d=16 used here; LeNet-small classifier step (batch 128) 0.06 s; evaluation of one
generator on 10,000 samples about 20 s):

* ``small`` (Fashion-MNIST, 2 CPU cores): classifier 2 epochs x 453 steps (~1 min); teacher DCGAN d=32,
  BCE game, 3 x 800 steps (~4.6 min); MSE students d = 16, 8, 4, 2, 1,500 steps each (~3.4 min); a
  joint student d = 4 (critic d=16), 1,500 steps (~2.5-4 min); evaluation ~2 min: about 15 minutes.
* ``full`` (GPU; the paper's protocol as far as it is given): classifier LeNet 32-64-1024 for 15 epochs;
  teacher WDCGAN d = 256 (the paper's MNIST choice, Fig. 2) with the WGAN game (weight clipping,
  5 critic steps) for 25 epochs; MSE and joint students at d = 128, 64, 32, 16, 8, 4, 2 for 10 epochs.
  MNIST / CIFAR-10 / CelebA-style sets run with ``data.name=...`` where the data exists (64x64 needs
  ``data.image_size=64`` on an image folder).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from rich.console import Console

from kdlab.experiments import EXPERIMENTS, grid

NAME = "gan-compression-sweep"

SCALES: Dict[str, Dict[str, Any]] = {
    "small": {
        "classifier": ["model.name=lenet", "model.kwargs={channels: [16, 32], fc: 256}", "trainer.epochs=2",
                       "data.val_size=2000", "optim.name=adam", "optim.lr=0.002", "optim.weight_decay=0.0"],
        "teacher_d": 32,
        "teacher": ["players.disc_d=16", "trainer.epochs=3", "trainer.limit_train_batches=800"],
        "student_ds": [16, 8, 4, 2],
        "joint_ds": [4],
        "student": ["trainer.epochs=3", "trainer.limit_train_batches=500"],
        "joint": ["players.disc_d=16"],
    },
    "full": {
        "classifier": ["trainer.accelerator=auto", "model.name=lenet", "trainer.epochs=15", "data.val_size=5000", "optim.name=adam",
                       "optim.lr=0.001", "optim.weight_decay=0.0"],
        "teacher_d": 256,
        "teacher": ["trainer.accelerator=auto", "model.name=wdcgan", "objective.generator.gan.mode=wgan",
                    "objective.discriminator.gan.mode=wgan", "players.clip=0.01", "players.disc=wdcgan", "players.disc_d=64", "players.n_critic=5",
                    "optim.lr=0.00005", "trainer.epochs=25"],
        "student_ds": [128, 64, 32, 16, 8, 4, 2],
        "joint_ds": [64, 16, 4],
        "student": ["trainer.accelerator=auto", "model.name=wdcgan", "trainer.epochs=10"],
        "joint": ["players.disc_d=64"],
    },
}

_CLASSIFIER_KEYS = ("trainer.", "data.", "out_dir=", "seed=")


def side_by_side_grid(real_images: torch.Tensor, generators: Sequence[torch.nn.Module], path: Path, n: int = 10,
                      seed: int = 0) -> Path:
    """One PNG: a row of real images, then one row per generator for the same ``n`` latents."""
    from kdlab.metrics.generative import generate_images, save_grid

    rows = [real_images[:n].float() / 255.0]
    for g in generators:
        rows.append(generate_images(g, n, g.latent_dim, seed=seed))
    return save_grid(torch.cat(rows), path, nrow=n)


@EXPERIMENTS.register(NAME, help="GAN compression limit (Aguinaldo et al.): teacher DCGAN d and MSE/joint students at smaller d")
def gan_compression_sweep(out_dir: Path, scale: str, seeds: Optional[List[int]] = None,
                          overrides: Sequence[str] = ()) -> Path:
    """Run the sweep at ``scale`` (``small`` | ``full``); returns ``out_dir/gan-compression-sweep/report.md``.

    ``seeds``: the first is used (one teacher per sweep). ``overrides`` apply to every GAN run; only
    ``trainer.*``, ``data.*``, ``out_dir``, ``seed`` overrides also apply to the metric classifier.

    Raises: ValueError: unknown scale (lists small, full).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    from kdlab.engine.generators import load_generator
    from kdlab.report.gan import compare_generator_runs
    from kdlab.runner import datasets_for

    plan = SCALES[scale]
    seed = int(seeds[0]) if seeds else 0
    console = Console(stderr=True)
    out_dir = Path(out_dir)
    common = [f"out_dir={out_dir}", f"seed={seed}"]
    user = list(overrides)
    clf_user = [o for o in user if o.startswith(_CLASSIFIER_KEYS)]
    clf = grid.run_cell([{"method": "teacher", "label": "metric classifier"}],
                        common + plan["classifier"] + ["name=gan-sweep-classifier", "data.batch_size=128"] + clf_user, console)
    clf_weights = clf / "teacher.safetensors"
    td = plan["teacher_d"]
    teacher = grid.run_cell([grid.recipe("gan_teacher")],
                            common + [f"model.kwargs.d={td}", f"eval.extractor={clf_weights}", "name=gan-sweep-teacher",
                                      f"label=teacher d={td}"] + plan["teacher"] + user, console)
    students = []
    for kind, ds, student in (("mse", plan["student_ds"], "gan_student_mse"),
                              ("joint", plan["joint_ds"], "gan_student_joint")):
        for d in ds:
            students.append(grid.run_cell(
                [grid.recipe(student)],
                common + [f"teacher.checkpoint={teacher}", f"model.kwargs.d={d}", f"eval.extractor={clf_weights}",
                          f"name=gan-sweep-{kind}-d{d}", f"label={kind.upper()} student d={d}"] + plan["student"]
                + (plan.get("joint", []) if kind == "joint" else []) + user,
                console))
    report_dir = out_dir / NAME
    cfg = grid.resolve([teacher / "config.yaml"])
    data = datasets_for(cfg)
    gens = [load_generator(teacher)] + [load_generator(s) for s in students]
    side_by_side_grid(data.test.images, gens, report_dir / "samples" / "side_by_side.png", seed=cfg.eval.sample_seed)
    intro = [f"Scale `{scale}`, seed {seed}. Teacher: DCGAN-family generator at d = {td}; MSE students (Fig. 3) at "
             f"d = {plan['student_ds']}, joint-loss students (MSE + adversarial, Fig. 4) at d = {plan['joint_ds']}. "
             "The paper reports compression ratios of 1669:1 (MNIST), 58:1 (CIFAR-10) and 87:1 (CelebA) before quality "
             "drops; compare the compression column with where FID/KID rise and VoL falls below the teacher's.", ""]
    return compare_generator_runs([teacher] + students, report_dir,
                                  title=f"GAN compression sweep ({data.spec.name}, {scale})",
                                  grid="samples/side_by_side.png", intro=intro)
