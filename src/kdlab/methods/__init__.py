"""Training games, one file each, registered by name in :data:`METHODS`."""
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.methods.distill import Distill, DistillStudent, TeacherMismatchError, load_teacher
from kdlab.methods.teacher import TeacherTraining

__all__ = ["METHODS", "Method", "Distill", "DistillStudent", "TeacherMismatchError", "TeacherTraining", "load_teacher", "unwrap"]

# GAN teacher training and GAN compression by distillation (Aguinaldo et al. 2019)
from kdlab.methods.gan_teacher import GANTraining  # noqa: E402
from kdlab.methods.gan_compression import GANCompression  # noqa: E402

__all__ += ["GANTraining", "GANCompression"]
