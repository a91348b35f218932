"""Where kdlab keeps data sets, and the error raised when one cannot be found.

This module imports nothing from kdlab, so every data module may use it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Union

#: Environment variable naming the data root (overridden by an explicit ``root=``).
DATA_ENV = "KDLAB_DATA"
#: Environment variable that, when set to 1/true/yes, forbids downloads when ``download=None``.
OFFLINE_ENV = "KDLAB_OFFLINE"
#: Data root used when neither ``root=`` nor ``$KDLAB_DATA`` is given.
DEFAULT_DATA_ROOT = Path("~/.cache/kdlab/data")

PathLike = Union[str, "os.PathLike[str]"]


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not be downloaded.

    The message says where kdlab looked, how to install or place the files, and which data root
    was used (and that ``$KDLAB_DATA`` sets it).
    """

    def __str__(self) -> str:  # FileNotFoundError would prefix errno fields; keep the message
        return str(self.args[0]) if self.args else ""


def data_root(root: Optional[PathLike] = None) -> Path:
    """The directory under which data sets live (torchvision's layout), not created here.

    Resolution order: the explicit ``root``; else ``$KDLAB_DATA``; else ``~/.cache/kdlab/data``.
    ``~`` is expanded; the path is made absolute.

    Args:
        root: an explicit directory, or None.

    Returns:
        The data root as an absolute :class:`pathlib.Path`.

    Raises:
        ValueError: if ``root`` (or ``$KDLAB_DATA``) is an empty string.
    """
    if root is None:
        env = os.environ.get(DATA_ENV)
        if env is not None:
            if not env.strip():
                raise ValueError(f"${DATA_ENV} is set but empty; unset it or name a directory")
            root = env
        else:
            root = DEFAULT_DATA_ROOT
    text = os.fspath(root)
    if not str(text).strip():
        raise ValueError(f"data root {root!r} is empty; pass a directory or set ${DATA_ENV}")
    return Path(text).expanduser().absolute()


def resolve_download(download: Optional[bool]) -> bool:
    """``download=None`` means: download unless ``$KDLAB_OFFLINE`` is 1/true/yes."""
    if download is None:
        return os.environ.get(OFFLINE_ENV, "").strip().lower() not in {"1", "true", "yes", "on"}
    if not isinstance(download, bool):
        raise ValueError(f"download must be True, False or None, got {download!r}")
    return download


def root_hint(root: Path) -> str:
    """The sentence every 'not found' error ends with: the data root and how to change it."""
    return (
        f"Data root: {root} (set it with root=... or the ${DATA_ENV} environment variable; "
        f"default {DEFAULT_DATA_ROOT})."
    )
