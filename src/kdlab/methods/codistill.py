"""CODIS: codistillation (Anil et al., "Large scale distributed neural network training through
online distillation", ICLR 2018), the CODIS baseline of KDGAN (Wang et al. 2018, Table 4).

Two peers are trained together; each minimises its cross entropy plus a distillation term towards
the OTHER peer's current predictions (detached):

    L_i = ce * CE(p_i, y) + codistill * [epoch >= burn_in] * T^2 KL(p_j^T || p_i^T),   j != i

Peer 0 is the classifier (``cfg.model``), exported as ``student``. Peer 1 is chosen by
``loss.peer``: ``teacher`` (default) = the pre-trained teacher of ``teacher.checkpoint``, trained
jointly (the same classifier/teacher pair as KDGAN, whose teacher is also fine-tuned); ``copy`` = a
second, freshly initialised instance of the classifier's architecture (Anil et al.'s setting; no
teacher needed). With privileged data (a third batch entry) the ``teacher`` peer sees it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

from kdlab.engine import file_sha256
from kdlab.losses import cross_entropy, kd_loss
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.methods.distill import load_teacher
from kdlab.models import build_model

PEERS = ("teacher", "copy")


@METHODS.register("codistill")
class Codistill(Method):
    """CODIS (Anil et al. 2018): two peers trained together, each distilling from the other's predictions."""

    export_name = "student"

    @dataclass
    class Config:
        """``loss`` section of a codistillation run."""

        ce: float = 1.0
        codistill: float = 1.0
        temperature: float = 1.0
        burn_in_epochs: int = 0  # epochs of CE only before the peers start distilling
        peer: str = "teacher"  # teacher | copy

    def __init__(self, cfg: Any, spec: Any) -> None:
        super().__init__(cfg, spec)
        lc = cfg.loss
        if lc.peer not in PEERS:
            raise ValueError(f"loss.peer = {lc.peer!r}; accepted: {', '.join(PEERS)}")
        for key in ("ce", "codistill"):
            if getattr(lc, key) < 0:
                raise ValueError(f"loss.{key} = {getattr(lc, key)!r} must be >= 0")
        if not lc.temperature > 0:
            raise ValueError(f"loss.temperature = {lc.temperature!r} must be > 0")
        if lc.burn_in_epochs < 0:
            raise ValueError(f"loss.burn_in_epochs = {lc.burn_in_epochs!r} must be >= 0")
        kw = dict(num_classes=spec.num_classes, in_channels=spec.in_channels, image_size=spec.image_size)
        classifier = build_network(cfg, spec)
        self.teacher_path = None
        if lc.peer == "teacher":
            peer, self.teacher_path = load_teacher(cfg.teacher.checkpoint, spec)
        else:
            peer = build_model(cfg.model.name, **kw, **dict(cfg.model.kwargs))
        self.add_player("classifier", classifier)
        self.add_player("peer", peer)
        self.epoch = 0

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self.epoch = epoch + 1

    def losses(self, x, y, x_peer) -> Dict[str, torch.Tensor]:
        """Both peers' losses for one batch (``c_*`` classifier, ``p_*`` peer)."""
        lc = self.cfg.loss
        zc = self.players["classifier"](x)
        zp = self.players["peer"](x_peer if lc.peer == "teacher" else x)
        terms = {"c_ce": lc.ce * cross_entropy(zc, y), "p_ce": lc.ce * cross_entropy(zp, y)}
        if lc.codistill > 0 and self.epoch >= lc.burn_in_epochs:
            terms["c_kd"] = lc.codistill * kd_loss(zc, zp, lc.temperature)  # zp detached inside
            terms["p_kd"] = lc.codistill * kd_loss(zp, zc, lc.temperature)
        return terms

    def training_step(self, batch, step: int) -> Dict[str, torch.Tensor]:
        x, y = batch[0], batch[1]
        terms = self.losses(x, y, batch[2] if len(batch) > 2 else x)
        c_loss = sum(v for k, v in terms.items() if k.startswith("c_"))
        p_loss = sum(v for k, v in terms.items() if k.startswith("p_"))
        # the two losses touch disjoint parameters (targets are detached): one backward serves both
        for name in ("classifier", "peer"):
            self.optimizers[name].zero_grad(set_to_none=True)
        self.fabric.backward(c_loss + p_loss)
        for name in ("classifier", "peer"):
            self.optimizers[name].step()
        out = {k: v.detach() for k, v in terms.items()}
        out["loss"] = (c_loss + p_loss).detach()
        return out

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["codistill"] = {"epoch": self.epoch}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state.get("codistill", {}).get("epoch", 0))

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["classifier"])

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        from kdlab.data import make_loader
        from kdlab.methods.evaluation import classifier_finalize
        from kdlab.methods.kdgan import view_accuracy

        out = classifier_finalize(self, run_dir, data, result, device)
        peer = unwrap(self.players["peer"])
        loader = make_loader(data.test, self.cfg.data.eval_batch_size, shuffle=False, seed=self.cfg.seed)
        view = 2 if self.cfg.loss.peer == "teacher" else 0
        out["peer"] = {"name": peer.arch, "kind": self.cfg.loss.peer, "test_acc_last": view_accuracy(peer, loader, device, view)}
        if self.teacher_path:
            out["peer"].update({"checkpoint": self.teacher_path, "sha256": file_sha256(self.teacher_path)})
        return out
