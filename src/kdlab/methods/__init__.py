"""Training games, one file each, registered by name in :data:`METHODS`."""
from kdlab.methods.base import METHODS, Method, build_network, unwrap
from kdlab.methods.distill import Distill, DistillStudent, TeacherMismatchError, load_teacher
from kdlab.methods.teacher import TeacherTraining

__all__ = ["METHODS", "Method", "Distill", "DistillStudent", "TeacherMismatchError", "TeacherTraining", "load_teacher", "unwrap"]
