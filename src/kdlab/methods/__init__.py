"""Training games, one file each, registered by name in :data:`METHODS`."""
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.methods.codistill import Codistill
from kdlab.methods.distill import Distill, DistillStudent, TeacherMismatchError, load_teacher
from kdlab.methods.gan_compression import GANCompression
from kdlab.methods.gan_teacher import GANTraining
from kdlab.methods.jacobian import JacobianDistill
from kdlab.methods.kdgan import KDGAN
from kdlab.methods.lwf import LwFStudent, LwFTransfer
from kdlab.methods.teacher import TeacherTraining

__all__ = [
    "METHODS",
    "Method",
    "Codistill",
    "Distill",
    "DistillStudent",
    "GANCompression",
    "GANTraining",
    "JacobianDistill",
    "KDGAN",
    "LwFStudent",
    "LwFTransfer",
    "TeacherMismatchError",
    "TeacherTraining",
    "build_network",
    "load_teacher",
    "unwrap",
]
