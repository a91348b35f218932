"""CODIS: codistillation (Anil et al., "Large scale distributed neural network training through
online distillation", ICLR 2018), the CODIS baseline of KDGAN (Wang et al. 2018, Table 4).

Two peers are trained together; each minimises its cross entropy plus a distillation term towards
the OTHER peer's current predictions (detached):

    L_i = sum_k weight_k * term_k(i, j),   j != i

the terms of ``objective.student`` (the classifier) and ``objective.peer``, each peer's objective having
the other peer as its teacher (detached by every term). Default for both: cross entropy (weight 1) and the
``codistill`` term, ``[epoch >= burn_in_epochs] T^2 KL(p_j^T || p_i^T)`` (weight 1, T = 1, no burn-in).

Peer 0 is the classifier (``cfg.model``), exported as ``student``. Peer 1 is chosen by
``players.peer``: ``teacher`` (default) = the pre-trained teacher of ``teacher.checkpoint``, trained
jointly (the same classifier/teacher pair as KDGAN, whose teacher is also fine-tuned); ``copy`` = a
second, freshly initialised instance of the classifier's architecture (Anil et al.'s setting; no
teacher needed). With privileged data (``batch.x_teacher``) the ``teacher`` peer sees it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

from kdlab.config import choice
from kdlab.data.batch import Batch
from kdlab.engine import file_sha256, load_network
from kdlab.games.base import METHODS, Method, unwrap
from kdlab.games.networks import build_network
from kdlab.metrics import evaluate_accuracy
from kdlab.models import build_model

PEERS = ("teacher", "copy")


@METHODS.register("codistill")
class Codistill(Method):
    """CODIS (Anil et al. 2018): two peers trained together, each distilling from the other's predictions."""

    export_name = "student"

    objectives = {"student": "student", "peer": "student"}
    default_objective = {p: {"ce": {"weight": 1.0}, "codistill": {"weight": 1.0, "temperature": 1.0}}
                         for p in ("student", "peer")}
    moved = {"codistill": "objective.student.codistill.weight and objective.peer.codistill.weight",
             "temperature": "objective.student.codistill.temperature and objective.peer.codistill.temperature",
             "burn_in_epochs": "objective.student.codistill.burn_in_epochs and objective.peer.codistill.burn_in_epochs"}
    synth_unsupported = None

    @dataclass
    class Config:
        """``players`` section of a codistillation run."""

        peer: str = choice("teacher", PEERS)

    def __init__(self, cfg: Any, spec: Any, transfer: Any = None) -> None:
        super().__init__(cfg, spec, transfer)
        lc = cfg.players
        kw = dict(num_classes=spec.num_classes, in_channels=spec.in_channels, image_size=spec.image_size)
        classifier = build_network(cfg, spec)
        self.teacher_path = None
        if lc.peer == "teacher":
            peer, self.teacher_path = load_network(cfg.teacher.checkpoint, spec, hint="teacher.checkpoint=runs/<teacher run> "
                                                   "(or players.peer=copy)")
        else:
            peer = build_model(cfg.model.name, **kw, **dict(cfg.model.kwargs))
        obj_c = self.build_objective(self.term_context(classifier, peer))
        obj_p = self.build_objective(self.term_context(peer, classifier), player="peer")
        self.add_student("classifier", classifier, obj_c, extra_features=obj_p.teacher_features)
        self.add_student("peer", peer, obj_p, extra_features=obj_c.teacher_features)
        self.build_synthesizer(peer, lambda: unwrap(self.players["classifier"]).net)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """The epoch now starting, told to both peers' terms (the codistillation burn-in)."""
        self.epoch = epoch
        for name in ("classifier", "peer"):
            unwrap(self.players[name]).objective.set_epoch(epoch)

    def on_epoch_end(self, epoch: int) -> None:
        super().on_epoch_end(epoch)
        self.set_epoch(epoch + 1)

    def losses(self, batch: Batch) -> Dict[str, torch.Tensor]:
        """Both peers' losses for one batch (``c_*`` classifier, ``p_*`` peer)."""
        return self.forward_losses(batch)[0]

    def forward_losses(self, batch: Batch):
        """(both peers' losses, the classifier's outputs, the peer's outputs) for one batch, no step."""
        lc = self.cfg.players
        sc = self.players["classifier"](batch.x)
        sp = self.players["peer"](batch.teacher_input if lc.peer == "teacher" else batch.x)
        tc = self.student_terms("classifier", sc, sp, batch)
        tp = self.student_terms("peer", sp, sc, batch)
        terms = {f"c_{k}": v for k, v in tc.items() if k != "loss"}
        terms.update({f"p_{k}": v for k, v in tp.items() if k != "loss"})
        return terms, sc, sp

    def training_step(self, batch: Batch, step: int) -> Dict[str, torch.Tensor]:
        terms, sc, sp = self.forward_losses(batch)
        c_loss = sum(v for k, v in terms.items() if k.startswith("c_"))
        p_loss = sum(v for k, v in terms.items() if k.startswith("p_"))
        # the two losses touch disjoint parameters (targets are detached): one backward serves both
        for name in ("classifier", "peer"):
            self.optimizers[name].zero_grad(set_to_none=True)
        self.backward(c_loss + p_loss)
        for name in ("classifier", "peer"):
            self.optimizers[name].step()
        out = {k: v.detach() for k, v in terms.items()}
        # terms with players of their own (an EBM, a paraphraser) update after the peers' step
        out.update({f"c_{k}": v for k, v in self.update_terms("classifier", sc, sp, batch).items()})
        out.update({f"p_{k}": v for k, v in self.update_terms("peer", sp, sc, batch).items()})
        out["loss"] = (c_loss + p_loss).detach()
        return out

    def state_dict(self) -> Dict[str, Any]:
        state = super().state_dict()
        state["codistill"] = {"epoch": self.epoch}
        return state

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.set_epoch(int(state.get("codistill", {}).get("epoch", 0)))

    def eval_model(self) -> nn.Module:
        return unwrap(self.players["classifier"]).net

    def finalize(self, run_dir: Any, data: Any, result: Any, device: Any) -> Dict[str, Any]:
        from kdlab.data import make_loader
        from kdlab.games.evaluation import classifier_finalize
        out = classifier_finalize(self, run_dir, data, result, device)
        peer = unwrap(self.players["peer"]).net
        loader = make_loader(data.test, self.cfg.data.eval_batch_size, shuffle=False, seed=self.cfg.seed)
        view = "teacher" if self.cfg.players.peer == "teacher" else "student"
        out["peer"] = {"name": peer.arch, "kind": self.cfg.players.peer,
                       "test_acc_last": evaluate_accuracy(peer, loader, device=device, view=view)}
        if self.teacher_path:
            out["peer"].update({"checkpoint": self.teacher_path, "sha256": file_sha256(self.teacher_path)})
        return out
