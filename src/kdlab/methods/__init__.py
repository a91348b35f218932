"""Training games, one file each, registered by name in :data:`METHODS`."""
from kdlab.methods.base import METHODS, Method, unwrap
from kdlab.methods.distill import Distill, DistillStudent, TeacherMismatchError, load_teacher
from kdlab.methods.teacher import TeacherTraining
from kdlab.methods.kdgan import KDGAN  # noqa: E402
from kdlab.methods.codistill import Codistill  # noqa: E402

__all__ = ["METHODS", "Method", "Distill", "DistillStudent", "TeacherMismatchError", "TeacherTraining", "load_teacher", "unwrap", "KDGAN", "Codistill"]
