"""VEM's paired mode (Kang et al. 2022, sec. 5.3): the real target against the student's output, chains that
start at the student, a closed-form energy as the independent check, its bad input and the section's
Langevin defaults (the term itself, the EBMs and real runs: test_vem.py)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from kdlab.config import ConfigError
from kdlab.data.batch import Batch
from kdlab.terms import Outputs, TermContext, build_objective


class _Quadratic(nn.Module):
    """E(x, s) = 0.5 ||x - a s||^2 per sample: grad_x E = x - a s in closed form (an independent check)."""

    def __init__(self, a: float) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(float(a)))

    def forward(self, x, s):
        return 0.5 * (x - self.a * s).pow(2).flatten(1).sum(1)


def _image_ctx(paired: bool = True) -> TermContext:
    torch.manual_seed(0)
    provides = {"teacher", "images", "features"} | ({"targets"} if paired else set())
    return TermContext(method="i2i-distill", kind="generator", student=nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh()),
                       teacher=nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Tanh()), student_input=(1, 6, 6), teacher_input=(1, 6, 6),
                       provides=frozenset(provides),
                       why_not={} if paired else {"targets": "data set 'toy' is an unpaired translation task"})


def test_vem_paired_mode_pairs_the_real_target_with_the_student_output_and_starts_chains_at_the_student():
    """Sec. 5.3: t = batch.target (not the teacher's image); eq. 7's chain starts at s (sec. 4.1.3).

    With E = 0.5 ||x - a s||^2, one noiseless ports step gives t~ = s - eta (s - a s) in closed form; the
    student's term is weight * (mean E(y, s) - mean E(t~, s)) and the EBM's loss eq. 6 + A.3's regulariser."""
    eta, a, w, reg = 0.3, 0.5, 0.2, 0.05
    obj = build_objective({"vem": {"target": "ground_truth", "steps": 1, "noise": 0.0, "step_size": eta, "weight": w,
                                   "reg": reg, "channels": 4}}, _image_ctx())
    term = obj.terms["vem"]
    assert not obj.needs_teacher and "targets" in term.requires and "teacher" not in term.requires
    object.__setattr__(term, "ebm", _Quadratic(a))
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 1, 6, 6, generator=g, requires_grad=True)
    y = torch.rand(4, 1, 6, 6, generator=g) * 2 - 1
    teacher_image = torch.full((4, 1, 6, 6), 9.0)  # must not be read
    out = obj(Outputs(out=s), Outputs(out=teacher_image), Batch(x=torch.zeros(4, 1, 6, 6), target=y))
    sd = s.detach()
    t_tilde = sd - eta * (sd - a * sd)
    e = lambda x: 0.5 * (x - a * sd).pow(2).flatten(1).sum(1)  # noqa: E731
    assert torch.allclose(term._cache[0], y) and torch.allclose(term._cache[1], t_tilde, atol=1e-6)
    assert float(out["vem"].detach()) == pytest.approx(w * float(e(y).mean() - e(t_tilde).mean()), rel=1e-5)
    # the student's gradient: d/ds of w * mean_b 0.5 (||y - a s||^2 - ||t~ - a s||^2) with t~ fixed
    out["loss"].backward()
    want = w * (-a * (y - a * sd) + a * (t_tilde - a * sd)) / 4
    assert torch.allclose(s.grad, want, atol=1e-6)
    losses = []
    term.update(Outputs(out=s), None, Batch(size=4), lambda name, loss: losses.append((name, float(loss.detach()))))
    ed, es = e(y), e(t_tilde)
    assert losses[0][0] == "ebm"
    assert losses[0][1] == pytest.approx(float(ed.mean() - es.mean() + reg * (ed.pow(2).mean() + es.pow(2).mean())), rel=1e-5)


def test_vem_paired_mode_bad_input():
    with pytest.raises(ConfigError, match=r"vem\.target = 'ground_truth' needs targets.*unpaired"):
        build_objective({"vem": {"target": "ground_truth"}}, _image_ctx(paired=False))
    with pytest.raises(ConfigError, match="feature '0' has no ground truth"):
        build_objective({"vem": {"target": "ground_truth", "layers": [["0", "0"]]}},
                        _image_ctx(paired=True))
    obj = build_objective({"vem": {"target": "ground_truth", "channels": 4}}, _image_ctx())
    with pytest.raises(ValueError, match="no ground-truth image"):
        obj.terms["vem"].target(torch.zeros(2, 1, 6, 6), None, Batch(x=torch.zeros(2, 1, 6, 6)))


def test_vem_langevin_defaults_are_section_5_3():
    """Sec. 5.3: K 10, eta 100, sigma 0.005 (the ports' eta 50 is the option ``step_size: 50``)."""
    from kdlab.terms.vem import PORTS_STEP_SIZE, VEMTerm

    cfg = VEMTerm.Config()
    assert (cfg.steps, cfg.step_size, cfg.noise, cfg.coupling) == (10, 100.0, 0.005, "ports")
    assert PORTS_STEP_SIZE == 50.0
