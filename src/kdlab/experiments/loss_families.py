"""The loss families of the reference frameworks side by side: ``kdlab reproduce loss-families``.

One teacher/student pair (VGG-9 -> VGG-4, the pair type of RepDistiller's vgg13 -> vgg8 column),
every registered family as a ``distill`` row (CE, KD, FitNets hints, AT, SP, CC, VID, RKD, PKT, AB,
FT, FSP, NST, CRD, DKD, DIST, SRD), the same seeds, data subsets, schedule and number of student
updates for every row, at two data budgets. The report gives test accuracy (best on validation and
last epoch, mean ± std over seeds), each row's paired t-test against KD, its wall time per run
relative to KD, and the CIFAR-100 numbers RepDistiller/mdistiller publish for vgg13 -> vgg8 as
context only (other data, other models, 240 epochs).

Row weights follow RepDistiller's CIFAR script (``-r 1 -b beta``; KD ``-r 0.1 -a 0.9``: hints 100, AT
1000, SP 3000, VID 1, RKD 1, PKT 30000, NST 50, CRD 0.8) where kdlab's term has RepDistiller's
normalisation, and are converted where it does not: CC has Knowledge-Distillation-Zoo's form and
weight (100, gamma 0.4, order 2); FSP sums over its C1 x C2 = 16 x 32 matrix where RepDistiller
averages, so 50 / 512 ~ 0.1; AB uses the per-image sum (``batchmean``) with RepDistiller's 3/1000
scale; FT is the paper's per-sample p-norm of normalised factors (512 entries here), weight 1, which
gives an initial value of the size of RepDistiller's 200 x per-element mean. DKD uses mdistiller's
CIFAR config (alpha 1, beta 8, T 4, warm-up 20 of 240 epochs, scaled to the run), DIST its CIFAR
setting (beta 2, gamma 2, tau 4) and SRD its defaults (feature MSE + KL at T = 1). Feature pairs for
the VGG-9 -> VGG-4 pair: hints on ``pool2`` (the middle hint, as FitNets), AT/VID on pool1-3, NST on
pool2-3, SP and FT on the last map before pooling to a vector (``pool3``), FSP on
the (pool1, conv2_1) pair of both networks (16 x 32 matrices), AB on conv2_1's pre-ReLU map, RKD/PKT/CC/CRD/SRD on the
penultimate embedding ``gap`` (128-d in both). RepDistiller's separate initialisation stage for AB,
FT and FSP is replaced by training the term with CE from the start (FT pre-trains its paraphraser
for the first ~10% of the steps): a choice, stated in the report.

Scales:

* ``small`` (2 CPU cores, about 40 minutes): width 0.25 (16-32-64/128 channels), teacher on 1,000
  images per class for 5 epochs; budgets 50 images per class (40 epochs = 320 steps) and 500 per class
  (6 epochs = 474 steps; the small scale's stand-in for full data); 500 validation and 2,000 test
  images; 3 seeds.
* ``full`` (a GPU): full widths, teacher 30 epochs on all 55,000 images; budgets 100 per class and the
  full training split, 240 epochs (RepDistiller's length); 5,000 validation images, full test set; 3 seeds.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from kdlab.experiments import EXPERIMENTS, grid

#: RepDistiller / mdistiller CIFAR-100 test accuracy %, vgg13 (74.64) -> vgg8 (70.36); context only
PUBLISHED = {"ce": 70.36, "kd": 72.98, "hints": 71.02, "attention": 71.43, "sp": 72.68, "cc": 70.71, "vid": 71.23,
             "rkd": 71.48, "pkt": 72.88, "ab": 70.94, "ft": 70.58, "fsp": 70.23, "nst": 71.53, "crd": 73.94,
             "dkd": 74.68}
PUBLISHED_TEACHER = 74.64

POOLS = [["pool1", "pool1"], ["pool2", "pool2"], ["pool3", "pool3"]]
GAP = [["gap", "gap"]]
PRE_RELU = "features.conv2_1.1"  # BatchNorm output of conv2_1, before its ReLU (AB's pre-activation)


def rows(scale_cfg: Dict[str, Any], n_rows: int, epochs: int, steps: int) -> Dict[str, tuple]:
    """Row name -> (label, ``objective.student``) for a budget of ``n_rows`` transfer images, ``epochs``
    epochs and ``steps`` student updates (CRD's k, DKD's warm-up and FT's paraphraser steps scale with them)."""
    ce = {"ce": {"weight": 1.0}}
    return {
        "ce": ("CE (student alone)", dict(ce)),
        "kd": ("KD (Hinton et al. 2015)", {"ce": {"weight": 0.1}, "kd": {"weight": 0.9, "temperature": 4.0}}),
        "hints": ("FitNets hints (Romero et al. 2015)", {**ce, "hints": {"weight": 100.0, "layers": [["pool2", "pool2"]]}}),
        "attention": ("AT (Zagoruyko & Komodakis 2017)", {**ce, "attention": {"weight": 1000.0, "mode": "zagoruyko",
                                                                             "layers": POOLS}}),
        "sp": ("SP (Tung & Mori 2019)", {**ce, "sp": {"weight": 3000.0, "layers": [["pool3", "pool3"]]}}),
        "cc": ("CC (Peng et al. 2019)", {**ce, "cc": {"weight": 100.0, "gamma": 0.4, "order": 2, "layers": GAP}}),
        "vid": ("VID (Ahn et al. 2019)", {**ce, "vid": {"weight": 1.0, "layers": POOLS}}),
        "rkd": ("RKD (Park et al. 2019)", {**ce, "rkd": {"weight": 1.0, "layers": GAP}}),
        "pkt": ("PKT (Passalis & Tefas 2018)", {**ce, "pkt": {"weight": 30000.0, "layers": GAP}}),
        "ab": ("AB (Heo et al. 2019)", {**ce, "ab": {"weight": 0.003, "reduction": "batchmean", "margin": 1.0,
                                                    "layers": [[PRE_RELU, PRE_RELU]]}}),
        "ft": ("FT (Kim et al. 2018)", {**ce, "ft": {"weight": 1.0, "layers": [["pool3", "pool3"]],
                                                    "paraphraser_steps": max(1, steps // 10)}}),
        "fsp": ("FSP (Yim et al. 2017)", {**ce, "fsp": {"weight": 0.1, "student_pairs": [["pool1", "features.conv2_1"]],
                                                       "teacher_pairs": [["pool1", "features.conv2_1"]]}}),
        "nst": ("NST (Huang & Wang 2017)", {**ce, "nst": {"weight": 50.0, "layers": POOLS[1:]}}),
        "crd": ("CRD (Tian et al. 2020)", {**ce, "crd": {"weight": 0.8, "layers": GAP,
                                                        "k": min(scale_cfg["crd_k"], n_rows - 1)}}),
        "dkd": ("DKD (Zhao et al. 2022)", {**ce, "dkd": {"weight": 1.0, "alpha": 1.0, "beta": 8.0, "temperature": 4.0,
                                                        "warmup": max(1, round(epochs / 12))}}),
        "dist": ("DIST (Huang et al. 2022)", {**ce, "dist": {"weight": 1.0, "beta": 2.0, "gamma": 2.0, "tau": 4.0}}),
        "srd": ("SRD (Yang et al. 2021)", {**ce, "srd": {"weight": 1.0, "layers": GAP}}),
    }


SCALE = {
    "small": {
        "seeds": [0, 1, 2],
        "common": ["data.val_size=500", "data.max_test=2000", "eval.latency=false", "eval.noise_sigmas=[0.0]",
                   "trainer.progress=false", "trainer.tensorboard=false"],
        "teacher": ["data.n_per_class=1000", "trainer.epochs=5"],
        "budgets": [(50, 40), (500, 6)],  # (images per class, epochs): 320 and 474 steps of 64
        "width": ["model.kwargs.width=0.25"],
        "crd_k": 4096,
    },
    "full": {
        "seeds": [0, 1, 2],
        "common": ["eval.latency=false", "trainer.progress=false"],
        "teacher": ["trainer.epochs=30"],
        "budgets": [(100, 240), (None, 240)],
        "width": ["model.kwargs.width=1.0"],
        "crd_k": 16384,
    },
}

TRAIN_SIZE = 60000  # Fashion-MNIST's training split (the validation part is taken from it)


def _budget_name(n: Optional[int]) -> str:
    return "full" if n is None else f"{n}pc"


def _terms_overrides(terms: Dict[str, Any]) -> List[str]:
    """``objective.student={...}`` as one override (a flow mapping in YAML syntax) replacing the recipe's terms."""
    import json

    return [f"objective.student={json.dumps(terms)}"]


@EXPERIMENTS.register("loss-families", help="Every distillation loss family on one VGG-9 -> VGG-4 pair, two data budgets")
def loss_families(out_dir: Path, scale: str, seeds: Optional[List[int]] = None, overrides: Sequence[str] = (),
                  only: Optional[Sequence[str]] = None) -> Path:
    """Train the teacher, then every row x budget x seed; write ``out_dir/loss-families/report.md``.

    ``only`` restricts the rows (names of :func:`rows`; tests and quick looks)."""
    sc = SCALE[scale]
    seeds = list(seeds) if seeds else sc["seeds"]
    out_dir = Path(out_dir)
    base = [f"out_dir={out_dir}", *sc["common"]]
    teacher = grid.run_cell([grid.recipe("loss_families_teacher")],
                            [*base, *sc["width"], *sc["teacher"], *overrides])
    results: Dict[str, Dict[str, Any]] = {}
    labels: Dict[str, str] = {}
    for n, epochs in sc["budgets"]:
        bname = _budget_name(n)
        n_rows = (n * 10 if n is not None else TRAIN_SIZE - 5000)
        steps = epochs * -(-n_rows // 64)
        table = rows(sc, n_rows, epochs, steps)
        names = [r for r in table if only is None or r in only]
        for row in names:
            label, terms = table[row]
            labels[row] = label
            cell = results.setdefault(bname, {}).setdefault(row, {"best": [], "last": [], "time": []})
            for seed in seeds:
                ov = [*base, *sc["width"], f"teacher.checkpoint={teacher}",
                      f"data.n_per_class={'null' if n is None else n}", f"trainer.epochs={epochs}", f"seed={seed}",
                      f"data.subset_seed={seed}", f"name=loss-families-{bname}-{row}-s{seed}", f"label={label}",
                      *_terms_overrides(terms), *overrides]
                s = grid.read_summary(grid.run_cell([grid.recipe("loss_families_student")], ov))
                cell["best"].append(s["test_acc_best"])
                cell["last"].append(s["test_acc_last"])
                cell["time"].append(s.get("train_time_s"))
    return _report(out_dir / "loss-families", scale, seeds, grid.read_summary(teacher), results, labels)


def _report(out: Path, scale: str, seeds: List[int], teacher: Dict[str, Any], results: Dict[str, Dict[str, Any]],
            labels: Dict[str, str]) -> Path:
    from kdlab.report import diff_text, markdown_table, mean_std, ordering_text, paired_test, plot_bars

    lines = [
        f"Scale `{scale}`, seeds {seeds}, data `{teacher['data']['name']}`. VGG-9 teacher "
        f"({teacher['model']['params']:,} params): test accuracy {teacher['test_acc_best']:.2f}%. "
        "Every row: the same VGG-4 student, seeds, data subset per seed, optimiser, schedule and number of "
        "student updates. Cells: test accuracy % (mean ± sample std over seeds) of the checkpoint selected on "
        "validation / of the last epoch; p: two-sided paired t-test against the KD row over seeds; time: wall "
        "time per run relative to KD (training + per-epoch validation; sensitive to any other load on the machine: "
        "`benchmarks/bench_terms.py` measures each term's step cost alone).",
        f"Published (context only: CIFAR-100, vgg13 {PUBLISHED_TEACHER} -> vgg8, 240 epochs, RepDistiller / "
        "mdistiller READMEs; other data and models, not comparable in level).",
        "RepDistiller's separate initialisation stage (AB, FSP, FT) is not used: each term trains with CE from "
        "the start; FT pre-trains its paraphraser for the first ~10% of the steps.",
        "",
    ]
    for bname, table in results.items():
        kd = table.get("kd")
        head = ["row", "best on val", "last epoch", "vs KD (best)", "time / KD", "published"]
        body, bars = [], ([], [], [])
        kd_time = mean_std(kd["time"])[0] if kd else None
        for row, cell in table.items():
            m_best, s_best, _ = mean_std(cell["best"])
            vs = "—" if kd is None or row == "kd" else diff_text(paired_test(cell["best"], kd["best"]))
            t = mean_std(cell["time"])[0]
            body.append([labels[row], grid.mean_std_text(cell["best"]), grid.mean_std_text(cell["last"]), vs,
                         f"{t / kd_time:.2f}" if t and kd_time else "—",
                         f"{PUBLISHED[row]:.2f}" if row in PUBLISHED else "—"])
            bars[0].append(row)
            bars[1].append(m_best)
            bars[2].append(s_best)
        plot_bars(*bars, out / "plots" / f"{bname}.png", title=f"budget {bname}: best-on-validation test accuracy",
                  reference=mean_std(kd["best"])[0] if kd else None)
        orderings = [ordering_text(row, "KD", paired_test(c["best"], kd["best"]))
                     for row, c in table.items() if kd is not None and row != "kd"]
        lines += [f"## Budget: {bname}", "", markdown_table(head, body), "", f"![{bname}](plots/{bname}.png)", "",
                  "Orderings against KD (best-on-validation accuracy):", ""] + [f"- {o}" for o in orderings] + [""]
    return grid.write_report(out, "Distillation loss families on one teacher/student pair", lines,
                             {"scale": scale, "seeds": seeds, "teacher_acc": teacher["test_acc_best"],
                              "results": results, "published": PUBLISHED})
