"""``kdlab export RUN --format onnx|torchscript``: ship a student, with its outputs checked.

The run's exported network (a classifier or a generator, from ``student.safetensors`` /
``teacher.safetensors`` or any kdlab weights file) is written as ONNX (``torch.onnx.export`` with the
``torch.export`` exporter, a dynamic batch axis; needs ``pip install 'kdlab[export]'``: onnx,
onnxscript, onnxruntime) or TorchScript (``torch.jit.trace``), loaded back in its own runtime
(onnxruntime on the CPU, ``torch.jit.load``) and compared with PyTorch:

* classifiers: the data set's test split (the data set named in the weights' metadata): max |logit
  difference| and top-1 agreement (%);
* generators: 1,000 fixed latents (seed 0): max |pixel difference| in the generator's [-1, 1] units.

Latency (ms per batch, median of timed runs after warm-up, on the CPU with torch's thread count for
both runtimes) of PyTorch and of the exported model at batch 1 and 64. Files: ``<run>/exports/<name>.onnx``
(or ``.pt``) and ``<run>/exports/<name>.<format>.json`` with the checks, both written atomically.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import torch

from kdlab.callable_module import make_callable
from kdlab.config_fields import check_output_dir
from torch import nn

FORMATS = ("onnx", "torchscript")
SUFFIX = {"onnx": ".onnx", "torchscript": ".pt"}
#: batch sizes of the latency comparison
LATENCY_BATCHES = (1, 64)


class ExportMismatchError(RuntimeError):
    """The exported model's outputs differ from PyTorch's by more than the tolerance."""


def load_exportable(weights: Any) -> Tuple[nn.Module, str, Path, Dict[str, str]]:
    """``(model in eval mode, "classifier" | "generator", weights path, metadata)`` of a run directory or
    kdlab weights file.

    Raises:
        FileNotFoundError: no kdlab weights there (names the path).
        ValueError: a file that is neither a kdlab classifier nor a kdlab generator.
    """
    from kdlab.engine import load_classifier, resolve_weights
    from kdlab.engine.checkpoint import read_weights
    from kdlab.engine.generators import GENERATOR_FORMAT, load_generator

    path = resolve_weights(weights)
    meta, _ = read_weights(path)
    if meta.get("format") == GENERATOR_FORMAT:
        return load_generator(path).eval(), "generator", path, meta
    return load_classifier(path).eval(), "classifier", path, meta


def _atomic_target(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    return Path(tmp)


def export_model(model: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """Write ``model`` (traced on ``example`` [B, ...]) to ``path`` atomically as ``fmt`` and return a
    function running the written file in its own runtime (CPU tensors in, CPU tensors out).

    Raises:
        ValueError: unknown ``fmt`` (lists the accepted ones).
        ImportError: ONNX export without onnx / onnxscript / onnxruntime (says what to install).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; accepted: {', '.join(FORMATS)}")
    tmp = _atomic_target(path)
    try:
        if fmt == "torchscript":
            # input-shape checks become constants of the trace (TracerWarning), which is what a fixed
            # architecture wants; torch >= 2.10 also flags TorchScript itself as deprecated (FutureWarning)
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore", (torch.jit.TracerWarning, FutureWarning, DeprecationWarning))
                traced = torch.jit.trace(model, example, check_trace=False)
            traced.save(str(tmp))
        else:
            missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
            if missing:
                raise ImportError(f"ONNX export needs onnx, onnxscript and onnxruntime; missing: {', '.join(missing)}; "
                                  "pip install 'kdlab[export]'")
            # weights inside the .onnx file: as external data they went to '.<name>.<random>.tmp.data', a file
            # the renamed model still pointed at (left beside it, and lost by whoever cleans temporaries)
            inline = {"external_data": False} if "external_data" in inspect.signature(torch.onnx.export).parameters else {}
            with torch.no_grad():
                torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["output"],
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, verbose=False, **inline)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (FutureWarning, DeprecationWarning))
            loaded = torch.jit.load(str(path), map_location="cpu").eval()

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return loaded(x)
        return run
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.detach().cpu().numpy()})[0])


def compare_outputs(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], batches: Iterable[torch.Tensor],
                    classifier: bool) -> Dict[str, Any]:
    """``{"n", "max_abs_diff", "top1_agreement"?}`` of PyTorch vs the exported ``run`` over ``batches``."""
    n, worst, agree = 0, 0.0, 0
    with torch.no_grad():
        for x in batches:
            ref, got = model(x), run(x)
            if got.shape != ref.shape:
                raise ExportMismatchError(f"the exported model gives shape {tuple(got.shape)}; PyTorch {tuple(ref.shape)}")
            worst = max(worst, float((got.float() - ref.float()).abs().max()))
            if classifier:
                agree += int((got.argmax(1) == ref.argmax(1)).sum())
            n += x.shape[0]
    out: Dict[str, Any] = {"n": n, "max_abs_diff": worst}
    if classifier:
        out["top1_agreement"] = 100.0 * agree / max(n, 1)
    return out


def latency_ms(fn: Callable[[torch.Tensor], Any], x: torch.Tensor, warmup: int = 3, iters: int = 20) -> float:
    """Median milliseconds of ``fn(x)`` over ``iters`` timed calls after ``warmup`` untimed ones."""
    with torch.no_grad():
        for _ in range(warmup):
            fn(x)
        times = []
        for _ in range(iters):
            t0 = time.perf_counter()
            fn(x)
            times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def _check_batches(model: nn.Module, kind: str, meta: Dict[str, str], max_test: Optional[int], batch: int = 500):
    if kind == "generator":
        g = torch.Generator().manual_seed(0)
        z = torch.randn(1000, model.latent_dim, generator=g)
        return [z[i:i + batch] for i in range(0, len(z), batch)], (model.latent_dim,)
    from kdlab.data import make_loader
    from kdlab.runner import datasets_for, load_run_config

    data_cfg: Dict[str, Any] = {"name": meta.get("data", "fashion-mnist"), "val_size": 0}
    if max_test:
        data_cfg["max_test"] = int(max_test)
    data = datasets_for(load_run_config([{"data": data_cfg}]))
    spec = data.spec
    got, want = (model.in_channels, model.image_size), (spec.in_channels, spec.image_size)
    if got != want:
        raise ValueError(f"the model takes (channels, size) {got}; its data set {spec.name!r} gives {want}")
    out = [b.x for b in make_loader(data.test, batch, shuffle=False, seed=0)]
    return out, (spec.in_channels, spec.image_size, spec.image_size)


def _check_out(target: Path, run_dir: Path, weights: Path, force: bool) -> None:
    """Refuse an ``--out`` that would replace a run's own file or, without ``force``, any existing file."""
    t = target.resolve()
    inside = t == run_dir.resolve() or run_dir.resolve() in t.parents
    if t == weights.resolve() or (inside and (run_dir / "exports").resolve() not in t.parents):
        raise ValueError(f"--out {target} is inside the run directory {run_dir}, whose files belong to the run; "
                         f"write under {run_dir / 'exports'} or outside the run")
    if t.is_dir():
        raise ValueError(f"--out {target} is a directory; give a file name (e.g. {target / ('model' + target.suffix)})")
    if t.exists() and not force:
        raise ValueError(f"--out {target} exists; pass --force to replace it, or choose another file")
    check_output_dir(target.parent, f"--out {target}: its folder")


def export_run(weights: Any, fmt: str, out: Optional[Path] = None, atol: float = 1e-3,
               max_test: Optional[int] = None, force: bool = False) -> Dict[str, Any]:
    """Export the network of ``weights`` (run directory or kdlab weights file) as ``fmt``, check it and
    time it; returns the report (also written beside the file as JSON).

    ``out`` never replaces a run's own files: a path inside the run directory is accepted only under its
    ``exports/`` folder, and an existing file is replaced only with ``force``.

    Raises:
        ValueError: unknown format, a bad ``atol`` (not finite and > 0), weights that are no kdlab network,
            ``out`` inside the run directory outside ``exports/``, or an existing ``out`` without ``force``.
        ExportMismatchError: outputs differ by more than ``atol`` (or top-1 agreement below 100%
            beyond that tolerance): the file is kept for inspection and the report says so.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; accepted: {', '.join(FORMATS)}")
    if not (atol > 0 and math.isfinite(atol)):
        raise ValueError(f"--atol = {atol} must be a finite number > 0 (the largest accepted |difference|)")
    from kdlab.engine import atomic_write_text

    model, kind, path, meta = load_exportable(weights)
    run_dir = path.parent if path.parent.name != "checkpoints" else path.parent.parent
    target = Path(out) if out is not None else run_dir / "exports" / f"{path.stem}{SUFFIX[fmt]}"
    if out is not None:
        _check_out(target, run_dir, path, force)
    batches, shape = _check_batches(model, kind, meta, max_test)
    run = export_model(model, batches[0][:2], fmt, target)
    report: Dict[str, Any] = {"weights": str(path), "kind": kind, "format": fmt, "file": str(target),
                              "bytes": target.stat().st_size, "check": compare_outputs(model, run, batches, kind == "classifier"),
                              "latency_ms": {}, "threads": torch.get_num_threads(), "torch": torch.__version__}
    for b in LATENCY_BATCHES:
        x = torch.randn(b, *shape, generator=torch.Generator().manual_seed(1))
        report["latency_ms"][str(b)] = {"pytorch": latency_ms(model, x), fmt: latency_ms(run, x)}
    check = report["check"]
    report["ok"] = check["max_abs_diff"] <= atol
    report["atol"] = atol
    atomic_write_text(target.with_suffix(f".{fmt}.json"), json.dumps(report, indent=2) + "\n")
    if not report["ok"]:
        raise ExportMismatchError(f"{target}: max |difference| to PyTorch {check['max_abs_diff']:.3g} > --atol {atol:g} "
                                  f"({check.get('top1_agreement', 'n/a')}% top-1 agreement); the file is kept for inspection")
    return report


def export(weights: Any, format: str = "onnx", out: Optional[Any] = None, **kwargs: Any) -> Dict[str, Any]:
    """``kdlab.export(...)``, the API of ``kdlab export``: write a run's network as ONNX or TorchScript, check it against PyTorch and time it;
    :func:`kdlab.export.export_run` (``atol``, ``max_test``, ``force``). Returns its report."""
    return export_run(str(getattr(weights, "path", weights)), format, Path(out) if out else None, **kwargs)


make_callable(__name__, export)  # kdlab.export(...) is this function
