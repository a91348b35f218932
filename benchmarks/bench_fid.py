"""kdlab's generative metrics vs torchmetrics called directly, and the GAN-compression student step
vs a plain PyTorch loop.

1. FID throughput (images/s) on the same tensors (real Fashion-MNIST test images vs the same images
   with Gaussian noise, in [0, 1]) and the same extractor (a kdlab LeNet; untrained weights: the cost
   does not depend on them):
   * ``torchmetrics``: ``FrechetInceptionDistance(feature=extractor, normalize=True)``, update/compute;
   * ``kdlab``: :func:`kdlab.metrics.generative.frechet_distance` (the same torchmetrics class underneath);
   * ``kdlab features-once+VoL``: :class:`FeatureSet` (which also computes the variance of the Laplacian
     of every image) + :func:`fid_from_features` (how a run's end-of-run
     evaluation computes FID, KID and IS from one extractor pass).
   Ratio kdlab / torchmetrics in images/s (target: >= 0.95). The two FIDs must agree.
2. Student training steps/s: the ``gan-compression`` method's ``training_step`` (MSE student, fresh z,
   frozen teacher) in a bare loop vs a hand-written loop doing the same computation.

Repetitions are interleaved and the median is reported.

Usage: python benchmarks/bench_fid.py [--n 5000] [--reps 3] [--steps 40] [--threads N]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from kdlab.data import Batch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="images per set")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=40, help="student steps per repetition")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--teacher-d", type=int, default=32)
    ap.add_argument("--student-d", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from torchmetrics.image.fid import FrechetInceptionDistance

    from kdlab.data import build_datasets, dataset_spec
    from kdlab.engine.generators import save_generator
    from kdlab.methods import METHODS
    from kdlab.metrics.generative import ClassifierFeatures, FeatureSet, fid_from_features, frechet_distance
    from kdlab.models import build_generator, build_model
    from kdlab.runner import load_run_config

    spec = dataset_spec("fashion-mnist")
    data = build_datasets("fashion-mnist", val_size=0, max_test=args.n)
    real = data.test.images.float() / 255.0
    fake = (real + 0.1 * torch.randn(real.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    torch.manual_seed(0)
    ex = ClassifierFeatures(build_model("lenet"), spec.mean, spec.std, "features")
    bs = 500

    def tm() -> float:
        m = FrechetInceptionDistance(feature=ex, reset_real_features=True, normalize=True).double()
        for i in range(0, real.shape[0], bs):
            m.update(real[i:i + bs], real=True)
        for i in range(0, fake.shape[0], bs):
            m.update(fake[i:i + bs], real=False)
        return float(m.compute())

    def kd() -> float:
        return frechet_distance(real, fake, ex, batch_size=bs)

    def once() -> float:
        return fid_from_features(FeatureSet.from_batches(real.split(bs), ex), FeatureSet.from_batches(fake.split(bs), ex))

    times = {"torchmetrics": [], "kdlab": [], "kdlab features-once+VoL": []}
    values = {}
    runs = [("torchmetrics", tm), ("kdlab", kd), ("kdlab features-once+VoL", once)]
    for rep in range(args.reps):
        # rotate the order each repetition so that warm-up and drift hit every variant alike
        for name, fn in runs[rep % 3:] + runs[:rep % 3]:
            t0 = time.perf_counter()
            values[name] = fn()
            times[name].append(time.perf_counter() - t0)
    n_img = 2 * real.shape[0]
    print(f"FID on {real.shape[0]} + {fake.shape[0]} images, extractor lenet ({ex.num_features} features), "
          f"threads {torch.get_num_threads()}")
    base = n_img / statistics.median(times["torchmetrics"])
    for name, ts in times.items():
        ips = n_img / statistics.median(ts)
        print(f"  {name:22s} FID {values[name]:10.4f}   {ips:9.0f} images/s   ratio vs torchmetrics {ips / base:.3f}")

    # -- student steps/s ----------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        teacher = build_generator("dcgan", 1, 28, d=args.teacher_d, latent_dim=100)
        tpath = save_generator(teacher, Path(tmp) / "t.safetensors")
        cfg = load_run_config([{
            "method": "gan-compression", "out_dir": tmp, "teacher": {"checkpoint": str(tpath)},
            "model": {"name": "dcgan", "kwargs": {"d": args.student_d}},
            "objective": {"student": {"mse": {"weight": 1.0}}}, "data": {"val_size": 0, "batch_size": args.batch},
            "optim": {"name": "adam", "lr": 1e-3, "betas": [0.5, 0.999], "weight_decay": 0.0, "scheduler": "none"},
        }])
        method = METHODS.get("gan-compression")(cfg, spec)

        class _Fabric:
            device = torch.device("cpu")
            is_global_zero = True

            def setup(self, m, o):
                return m, o

            def backward(self, loss):
                loss.backward()

        method.setup(_Fabric())
        method.train()
        batch = Batch(x=torch.zeros(args.batch, 1, 28, 28), y=torch.zeros(args.batch, dtype=torch.long))

        def kd_step() -> float:
            t0 = time.perf_counter()
            for s in range(args.steps):
                method.training_step(batch, s)
            return time.perf_counter() - t0

        t_plain = build_generator("dcgan", 1, 28, d=args.teacher_d, latent_dim=100).eval()
        s_plain = build_generator("dcgan", 1, 28, d=args.student_d, latent_dim=100).train()
        opt = torch.optim.Adam(s_plain.parameters(), 1e-3, betas=(0.5, 0.999))

        def plain() -> float:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                z = torch.randn(args.batch, 100)
                with torch.no_grad():
                    t_img = t_plain(z)
                loss = F.mse_loss(s_plain(z), t_img)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return time.perf_counter() - t0

        kd_step(), plain()  # warm-up
        tk, tp = [], []
        for _ in range(args.reps):
            tp.append(plain())
            tk.append(kd_step())
        sp, sk = args.steps / statistics.median(tp), args.steps / statistics.median(tk)
        print(f"MSE student step (teacher d={args.teacher_d}, student d={args.student_d}, batch {args.batch}):")
        print(f"  plain PyTorch loop   {sp:8.2f} steps/s")
        print(f"  kdlab training_step  {sk:8.2f} steps/s   ratio kdlab / plain {sk / sp:.3f}")


if __name__ == "__main__":
    main()
