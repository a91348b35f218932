"""Training games, one file each, registered by name in :data:`METHODS`."""
from kdlab.methods.base import METHODS, Method, unwrap
from kdlab.methods.distill import Distill, DistillStudent, TeacherMismatchError, load_teacher
from kdlab.methods.teacher import TeacherTraining
from kdlab.methods.jacobian import JacobianDistill, JacobianStudent
from kdlab.methods.lwf import LwFStudent, LwFTransfer

__all__ = ["METHODS", "Method", "Distill", "DistillStudent", "TeacherMismatchError", "TeacherTraining", "JacobianDistill", "JacobianStudent", "LwFStudent", "LwFTransfer", "load_teacher", "unwrap"]
