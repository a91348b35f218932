"""kdlab: knowledge distillation of classifiers and GAN generators.

The Python API (:mod:`kdlab.api`): ``distill``, ``train_teacher``, ``compress_gan``, ``compare``, ``evaluate``,
``export``, ``Run``; plugins (:mod:`kdlab.plugins`): ``register_model``, ``register_term``, ``register_method``,
``register_dataset``. Imported on first use, so ``import kdlab`` (and the CLI) stays light.
"""
__version__ = "0.1.0"

_API = ("Run", "distill", "train_teacher", "compress_gan", "compare", "evaluate", "export")
_PLUGINS = ("register_model", "register_term", "register_method", "register_dataset")
__all__ = ["__version__", *_API, *_PLUGINS]


def __getattr__(name: str):
    if name in ("compare", "export"):  # subpackage/module names too: the modules themselves are callable
        import importlib

        return importlib.import_module(f"kdlab.{name}")
    if name in _API:
        from kdlab import api

        return getattr(api, name)
    if name in _PLUGINS:
        from kdlab import plugins

        return getattr(plugins, name)
    raise AttributeError(f"module 'kdlab' has no attribute {name!r}")
