"""Metrics of a trained classifier: accuracy (clean / under Gaussian input noise) and cost
(parameters, MACs, CPU latency).

Imports only torch and the standard library (never kdlab.data / engine / methods).
"""
from .accuracy import accuracy_under_noise, eval_mode, evaluate_accuracy
from .complexity import count_macs, count_parameters, cpu_latency_ms

__all__ = [
    "evaluate_accuracy",
    "accuracy_under_noise",
    "eval_mode",
    "count_parameters",
    "count_macs",
    "cpu_latency_ms",
]
