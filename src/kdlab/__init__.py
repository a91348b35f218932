"""kdlab: knowledge distillation of classifiers and GAN generators."""
__version__ = "0.1.0"
