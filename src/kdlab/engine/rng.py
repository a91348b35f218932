"""Random-number streams of a run: saved in ``last.ckpt`` and restored on ``--resume``.

Under DDP every rank keeps the one-process stream (the same seed, never re-seeded per rank): a draw with
one row per sample draws the global batch's rows and keeps this rank's (:func:`kdlab.ranks.rank_rows`),
so W ranks draw what one process with the global batch draws. ``last.ckpt`` still keeps each rank's
state (:func:`gather_rng`), so a stream that a rank advanced on its own resumes where it was."""
from __future__ import annotations

import random
from typing import Any, Dict, Optional

import torch


def rng_state() -> Dict[str, Any]:
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def rng_bytes() -> torch.Tensor:
    """This process's torch CPU and CUDA generator states, concatenated (uint8 [L])."""
    parts = [torch.get_rng_state()]
    if torch.cuda.is_available():
        parts += list(torch.cuda.get_rng_state_all())
    return torch.cat(parts)


def set_rng_bytes(packed: torch.Tensor) -> None:
    n = torch.get_rng_state().numel()
    torch.set_rng_state(packed[:n].clone())
    if torch.cuda.is_available():
        rest = packed[n:]
        states = list(torch.cuda.get_rng_state_all())
        sizes = [st.numel() for st in states]
        if sum(sizes) == rest.numel():
            torch.cuda.set_rng_state_all(list(torch.split(rest.clone(), sizes)))


def gather_rng(fabric: Any) -> Optional[torch.Tensor]:
    """Every rank's :func:`rng_bytes` as uint8 [world size, L] (None for one process), so that a
    resumed DDP run continues each rank's own stream."""
    if fabric.world_size == 1:
        return None
    mine = rng_bytes().to(torch.int32).to(fabric.device)  # int32: every backend gathers it
    return fabric.all_gather(mine).reshape(fabric.world_size, -1).cpu().to(torch.uint8)
