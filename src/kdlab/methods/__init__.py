"""Training games, one file each, registered by name in :data:`METHODS` with ``@METHODS.register``.

Every module of this package is imported here (a new method is one new file) and every one is a
method: methods never import each other. What they share (the :class:`Method` base and the registry, the
student bases, GAN and image-to-image players, evaluations, the teacher cache, the synthesizer) sits a
layer down, in :mod:`kdlab.games`.
"""
import importlib
import pkgutil

from kdlab.engine import GeneratorMismatchError, TeacherMismatchError, unwrap
from kdlab.games.base import KINDS, METHODS, ROLES, Method
from kdlab.games.networks import build_network

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

from kdlab.methods.codistill import Codistill  # noqa: E402
from kdlab.methods.distill import Distill  # noqa: E402
from kdlab.methods.gan_compression import GANCompression  # noqa: E402
from kdlab.methods.gan_teacher import GANTraining  # noqa: E402
from kdlab.methods.jacobian import JacobianDistill  # noqa: E402
from kdlab.methods.kdgan import KDGAN  # noqa: E402
from kdlab.methods.lwf import LwFNet, LwFTransfer  # noqa: E402
from kdlab.methods.teacher import TeacherTraining  # noqa: E402

__all__ = [
    "KINDS",
    "METHODS",
    "ROLES",
    "Method",
    "ClassifierStudentMethod",
    "GeneratorStudentMethod",
    "Codistill",
    "Distill",
    "GANCompression",
    "GANTraining",
    "GeneratorMismatchError",
    "JacobianDistill",
    "KDGAN",
    "LwFNet",
    "LwFTransfer",
    "TeacherMismatchError",
    "TeacherTraining",
    "build_network",
    "unwrap",
]
