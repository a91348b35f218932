"""Training games, one file each, registered by name in :data:`METHODS` with ``@METHODS.register``.

Every module of this package is imported here (a new method is one new file); the modules that
are not methods are the shared bases and helpers: ``base`` (:class:`Method`), ``classifier_student``
and ``generator_student`` (the bases of students), ``gan_config``, ``gan_players``, ``gan_eval``
and ``evaluation``.
"""
import importlib
import pkgutil

from kdlab.engine import GeneratorMismatchError, TeacherMismatchError, unwrap
from kdlab.methods.base import KINDS, METHODS, ROLES, Method, build_network

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
