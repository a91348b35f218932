"""``kdlab reproduce gan-joint-vs-mse``: the joint student loss of GAN compression (Aguinaldo et al. 2019,
Fig. 4) against the MSE student (Fig. 3) on equal terms.

The paper's claim: adding an adversarial term to the student's MSE to the teacher reduces the blur of
MSE students. The earlier sweep (``gan-compression-sweep``) gave the joint student a third of the MSE
students' updates (one student step per ``n_critic`` = 3 batches), a lower learning rate without schedule
and MSE weight 0.3; here every row has the SAME number of student updates, learning rate, schedule,
latents and seeds:

* ``mse``: ``L = MSE`` (gan weight 0);
* ``joint-a0.3``: the public reproduction's ``0.3 MSE + 0.7 L_adv`` (WGAN-GP critic, penalty 10, 3 critic
  steps per student step);
* ``joint-w{w}``: ``MSE + w L_adv`` for a grid of adversarial weights ``w``.

The joint rows see ``n_critic`` times the batches (their critic steps on every batch, the student on every
``n_critic``-th), so that the student updates are equal; the critic has its own rate (``players.disc_lr``
2e-4, the reproduction's). Teacher and metric classifier are those of ``gan-compression-sweep`` (same
names and configs: reused when that sweep ran). Metrics: FID / KID / IS against the real test images,
the variance of the Laplacian (VoL: higher = sharper; the blur claim), the fidelity FID to the teacher and
the MSE to the teacher; paired t-tests across seeds for every stated ordering; sample grids side by side.

Scales: ``small`` (2 CPU cores, ~70 min): DCGAN d = 32 teacher, students d = 4, 1,500 student updates of
batch 64, Adam 1e-3 (0.5, 0.999) with a cosine schedule (the MSE student's recipe), 3 seeds; ``full``: the
sweep's full teacher and 10 epochs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from rich.console import Console

from kdlab.experiments import EXPERIMENTS, grid
from kdlab.experiments.gan_sweep import SCALES as SWEEP, side_by_side_grid

NAME = "gan-joint-vs-mse"
#: adversarial weights of the joint grid (MSE weight 1), besides the reproduction's a = 0.3
ADV_WEIGHTS = (0.01, 0.1, 1.0)
N_CRITIC = 3

SCALES: Dict[str, Dict[str, Any]] = {
    "small": {"seeds": [0, 1, 2], "d": 4, "epochs": 3, "batches": 500,
              "common": ["optim.lr=0.001", "optim.scheduler=cosine", "eval.n_samples=5000", "data.max_test=5000"]},
    "full": {"seeds": [0, 1, 2], "d": 8, "epochs": 10, "batches": None,
             "common": ["trainer.accelerator=auto", "optim.lr=0.001", "optim.scheduler=cosine"]},
}
_CLASSIFIER_KEYS = ("trainer.", "data.", "out_dir=", "seed=")


def rows() -> Dict[str, Dict[str, Any]]:
    """Row -> (label, mse weight, adversarial weight)."""
    out = {"mse": {"label": "MSE (Fig. 3)", "mse": 1.0, "adv": 0.0},
           "joint-a0.3": {"label": "joint 0.3 MSE + 0.7 adv (reproduction)", "mse": 0.3, "adv": 0.7}}
    out.update({f"joint-w{w:g}": {"label": f"joint MSE + {w:g} adv", "mse": 1.0, "adv": w} for w in ADV_WEIGHTS})
    return out


@EXPERIMENTS.register(NAME, help="GAN compression: MSE vs joint (MSE + adversarial) students at equal updates "
                                 "(Aguinaldo et al. Figs. 3-4, the blur claim)")
def gan_joint_vs_mse(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = ()) -> Path:
    """Train every cell (finished cells are reused) and write ``out_dir/gan-joint-vs-mse/report.md``.

    Raises: ValueError: unknown scale (lists small, full).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; accepted: {', '.join(SCALES)}")
    sc, plan = SCALES[scale], SWEEP[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    console = Console(stderr=True)
    out_dir = Path(out_dir)
    user = list(overrides)
    base = [f"out_dir={out_dir}"]
    clf = grid.run_cell([{"method": "teacher", "label": "metric classifier"}],
                        base + ["seed=0"] + plan["classifier"] + ["name=gan-sweep-classifier", "data.batch_size=128"]
                        + [o for o in user if o.startswith(_CLASSIFIER_KEYS)], console)
    extractor = clf / "teacher.safetensors"
    td = plan["teacher_d"]
    teacher = grid.run_cell([grid.recipe("gan_teacher")],
                            base + ["seed=0", f"model.kwargs.d={td}", f"eval.extractor={extractor}",
                                    "name=gan-sweep-teacher", f"label=teacher d={td}"] + plan["teacher"] + user, console)
    cells: Dict[str, List[Path]] = {}
    for row, r in rows().items():
        joint = r["adv"] > 0
        limit = sc["batches"] * (N_CRITIC if joint else 1) if sc["batches"] else None
        game = ([f"players.n_critic={N_CRITIC}", "objective.student.gan.mode=wgan", "objective.discriminator.gan.mode=wgan",
                 "objective.discriminator.gradient_penalty.weight=10", "players.disc=wdcgan", "players.disc_d=16",
                 "players.disc_lr=0.0002"] if joint else [])
        for seed in seeds:
            cells.setdefault(row, []).append(grid.run_cell([grid.recipe("gan_student_mse")], base + [
                f"teacher.checkpoint={teacher}", f"model.kwargs.d={sc['d']}", f"eval.extractor={extractor}",
                f"objective.student={json.dumps({'mse': {'weight': r['mse']}, 'gan': {'weight': r['adv']}})}",
                f"trainer.epochs={sc['epochs']}", f"seed={seed}", f"name={NAME}-{row}-d{sc['d']}-s{seed}",
                f"label={r['label']} d={sc['d']}", *([f"trainer.limit_train_batches={limit}"] if limit else []),
            ] + game + sc["common"] + user, console))
    return write(out_dir / NAME, scale, seeds, sc, teacher, cells)


def _gen(run: Path, key: str) -> Optional[float]:
    v = (grid.read_summary(run).get("generative") or {}).get(key)
    return None if v is None else float(v)


def write(out: Path, scale: str, seeds: List[int], sc: Dict[str, Any], teacher: Path,
          cells: Dict[str, List[Path]]) -> Path:
    from kdlab.engine.generators import load_generator
    from kdlab.report import claim_text, format_mean_std, markdown_table
    from kdlab.runner import datasets_for

    labels = {row: r["label"] for row, r in rows().items()}
    metrics = (("FID ↓", "fid", 2), ("KID ↓", "kid", 4), ("IS ↑", "is", 3), ("VoL (sharpness) ↑", "vol", 1),
               ("FID to teacher ↓", "fidelity_fid", 2), ("MSE to teacher ↓", "mse_to_teacher", 4))
    t = grid.read_summary(teacher).get("generative") or {}
    lines = [f"Scale `{scale}`, seeds {seeds}. Students d = {sc['d']} of a DCGAN d = 32 teacher (FID "
             f"{t.get('fid', float('nan')):.2f}, VoL {t.get('vol', float('nan')):.1f}), every row with the same "
             "student updates, learning rate, schedule, latents and seeds (the joint rows' critic sees "
             f"{N_CRITIC}x the batches). Cells: mean ± std over seeds.", ""]
    body, vals = [], {}
    for row, runs in cells.items():
        vals[row] = {key: [_gen(r, key) for r in runs] for _, key, _ in metrics}
        body.append([labels[row], *[format_mean_std([v for v in vals[row][k] if v is not None], digits=dg)
                                    for _, k, dg in metrics]])
    lines += [markdown_table(["row", *[m[0] for m in metrics]], body), "",
              "The paper's claim (the joint loss reduces blur) and quality, each joint row against MSE:", ""]
    nan = lambda xs: [float("nan") if v is None else v for v in xs]  # noqa: E731
    for row in cells:
        if row == "mse":
            continue
        lines.append(f"- VoL: {claim_text(labels[row], labels['mse'], nan(vals[row]['vol']), nan(vals['mse']['vol']), unit='VoL')}")
        lines.append("- FID: " + claim_text(labels[row], labels["mse"], [-v for v in nan(vals[row]["fid"])],
                                           [-v for v in nan(vals["mse"]["fid"])], unit="FID"))
    cfg = grid.resolve([teacher / "config.yaml"])
    gens = [load_generator(teacher)] + [load_generator(runs[0]) for runs in cells.values()]
    side_by_side_grid(datasets_for(cfg).test.images, gens, out / "samples" / "side_by_side.png", seed=cfg.eval.sample_seed)
    lines += ["", "![samples](samples/side_by_side.png)",
              f"*the same latents per column; rows: real test images, teacher, {', '.join(labels.values())} (seed {seeds[0]})*"]
    return grid.write_report(out, "GAN compression: MSE vs joint students at equal updates (Aguinaldo et al. 2019)",
                             lines, {"scale": scale, "seeds": seeds, "values": vals})
