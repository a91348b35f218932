"""``make demo`` / ``kdlab demo``: the main job on real Fashion-MNIST, as a ``kdlab compare`` call.

Trains a LeNet teacher on the full training split (minus a 5,000-image validation split), then
distills an MLP 784-100-100-10 student from 100 images per class three ways (cross entropy only,
CE + Hinton KD, CE + logit matching), each with three seeds (seed ``s`` also draws the ``s``-th
100-per-class subset, the same one for every method: paired comparisons), and writes a
side-by-side report (mean +- std over seeds, paired tests against CE only) to ``<out>/demo/report.md``.
The comparison is the packaged spec ``recipes/compare/demo.yaml`` (``kdlab compare demo`` runs the
same); a run whose directory already holds a ``summary.json`` for the same config is reused.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

#: the packaged compare spec of the demo (``src/kdlab/recipes/compare/demo.yaml``)
SPEC = "demo"


def run_demo(out_dir: Path = Path("runs"), quick: bool = False, extra: Sequence[str] = (),
             jobs: Optional[int] = None) -> Path:
    """Run the demo; returns the path of the comparison report.

    Args:
        out_dir: parent of the run directories (``<out_dir>/demo-*``) and of ``<out_dir>/demo``.
        quick: a short smoke-test version (the spec's ``quick`` section: 1 teacher epoch on 300 images
            per class, 5 student epochs, one seed, small validation and test splits).
        extra: ``key=value`` overrides applied to every run.
        jobs: parallel student runs (:func:`kdlab.compare.run_compare`; None = its default).
    """
    from kdlab.compare import load_spec, run_compare

    return run_compare(load_spec(SPEC, quick=quick), Path(out_dir), extra, jobs=jobs).report
