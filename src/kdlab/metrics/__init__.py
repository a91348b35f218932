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

# Generative metrics (GAN compression): FID, KID, IS through torchmetrics, variance of Laplacian, grids.
from .generative import (  # noqa: E402
    ClassifierFeatures,
    FeatureSet,
    fid_from_features,
    frechet_distance,
    generate_images,
    generator_batches,
    inception_score,
    is_from_logits,
    kernel_inception_distance,
    kid_from_features,
    save_grid,
    variance_of_laplacian,
)

__all__ += ["ClassifierFeatures", "FeatureSet", "frechet_distance", "kernel_inception_distance", "inception_score",
            "fid_from_features", "kid_from_features", "is_from_logits", "variance_of_laplacian", "generate_images",
            "generator_batches", "save_grid"]

# Image-to-image translation: MAE/SSIM vs ground truth, domain-classifier accuracy, compression ratios.
from .translation import compression_table, domain_accuracy, paired_errors, translate  # noqa: E402

__all__ += ["paired_errors", "domain_accuracy", "compression_table", "translate"]
