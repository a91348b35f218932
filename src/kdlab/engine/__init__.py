"""The loop every method shares (Lightning Fabric), checkpoints, logging, optimizers."""
from kdlab.engine.callbacks import Callback, CallbackError, PlayerHandle, PlayersView
from kdlab.engine.checkpoint import (
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    load_classifier,
    resolve_weights,
    save_checkpoint,
    save_classifier,
)
from kdlab.engine.digest import file_sha256
from kdlab.engine.loading import (
    GeneratorMismatchError,
    TeacherMismatchError,
    check_generator_shape,
    load_extractor,
    load_network,
    network_identity,
)
from kdlab.engine.interrupt import TrainingInterrupted
from kdlab.engine.loop import FitResult, NonFiniteLossError, Trainer, copy_with_state, make_fabric, unwrap
from kdlab.engine.train_data import train_loader
from kdlab.engine.optim import build_optimizer, build_scheduler, optim_with_lr

__all__ = [
    "Callback",
    "CallbackError",
    "PlayerHandle",
    "PlayersView",
    "GeneratorMismatchError",
    "TeacherMismatchError",
    "check_generator_shape",
    "load_extractor",
    "load_network",
    "network_identity",
    "FitResult",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "Trainer",
    "train_loader",
    "atomic_write",
    "atomic_write_text",
    "build_optimizer",
    "build_scheduler",
    "optim_with_lr",
    "copy_with_state",
    "file_sha256",
    "load_checkpoint",
    "load_classifier",
    "make_fabric",
    "resolve_weights",
    "save_checkpoint",
    "save_classifier",
    "unwrap",
]
