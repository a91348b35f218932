"""Train / validation / test datasets of one data set, the way every kdlab run builds them."""
from __future__ import annotations

import os
from dataclasses import dataclass
from dataclasses import replace
from typing import Any, Optional, Sequence, Union

import torch

from kdlab.data.memory import InMemoryDataset
from kdlab.data.sets import DEFAULT_DATASET, DataSpec, dataset_spec, given_validation, hflip_ok, load_split
from kdlab.data.splits import train_val_split
from kdlab.data.transfer import TRANSFER_LABELLED, build_transfer

#: Seed of the stratified ``max_test`` subset of the test split: fixed, so every run that asks for
#: the same ``max_test`` is scored on the same images whatever its subset seed.
TEST_SUBSET_SEED = 0


@dataclass
class Datasets:
    """The three datasets of a run plus the data set's spec.

    Attributes:
        train: training examples (the n-per-class subset if requested), augmented if asked.
        val: held-out part of the official training split (never augmented), or None if val_size = 0.
        test: the official test split (or a stratified ``max_test`` part of it), never augmented.
        spec: :class:`DataSpec` (classes, channels, image size, mean/std).
        transfer: what the student trains on (:func:`kdlab.data.transfer.build_transfer`): ``train``
            itself by default, unlabelled images of another data set, or a data-free ``NoData``.
    """

    train: InMemoryDataset
    val: Optional[InMemoryDataset]
    test: InMemoryDataset
    spec: DataSpec
    transfer: Any = None

    def __post_init__(self) -> None:
        if self.transfer is None:
            self.transfer = self.train


def build_datasets(
    name: str = DEFAULT_DATASET,
    root: Optional[os.PathLike] = None,
    val_size: Union[int, float] = 5000,
    n_per_class: Optional[int] = None,
    subset_seed: int = 0,
    augment: bool = False,
    download: Optional[bool] = None,
    image_size: Optional[int] = None,
    max_test: Optional[int] = None,
    privileged: Optional[str] = None,
    privileged_factor: int = 4,
    classes: Optional[Sequence[int]] = None,
    transfer: Optional[str] = None,
    transfer_n: Optional[int] = None,
    transfer_channels: Optional[int] = None,
    transfer_size: Optional[int] = None,
    steps_per_epoch: Optional[int] = None,
    synth_real: Optional[str] = None,
    batch_size: int = 128,
    channels: Optional[int] = None,
    direction: str = "AtoB",
) -> Datasets:
    """Load a data set and carve it into train / val / test :class:`InMemoryDataset` s.

    Order of operations (so the validation set never overlaps training data):
    1. the validation set is a stratified ``val_size`` part of the full official training split,
       drawn with ``subset_seed`` (:func:`train_val_split`) -- or, for in-memory data registered with its own
       validation set, that set (``val_size`` is then ignored);
    2. if ``n_per_class`` is given, the training set is a stratified subset of exactly
       ``n_per_class`` images per class drawn from the rest (:func:`stratified_subset`, same seed);
    3. the test set is the official test split; with ``max_test`` a stratified ``max_test`` images
       of it (seed :data:`TEST_SUBSET_SEED`), for quick runs.
    For an image-to-image translation task (``edges2fashion``, ``fashion2digits``, ``unpaired:<a>,<b>``,
    ``paired-folder:<path>``, ``unpaired-folder:<path>``; :mod:`kdlab.data.translation`) the three are
    :class:`kdlab.data.translation_set.TranslationDataset` s (batches carry ``target``), rows are the
    source domain's, and ``channels`` / ``direction`` apply; ``privileged``, ``classes`` and ``transfer``
    do not (refused). Otherwise:
    all three are normalised with the data set's mean/std (``spec.mean``/``spec.std``); only the
    training set is augmented (random crop, plus horizontal flips where :func:`hflip_ok`).

    Args:
        name: data set name or ``imagefolder:<path>``.
        root: data root.
        val_size: int count or float fraction of the training split; 0 = no validation set.
        n_per_class: training examples per class (None = all remaining).
        subset_seed: seed of the validation split and the n-per-class subset.
        augment: augment the training set.
        download: see :func:`load_split`.
        image_size: resize images (default: the set's own size).
        max_test: use a stratified part of this many test images (None = all).
        privileged: None, or a degradation (``'downsample'``, ``'mask'``): every split becomes a
            :class:`kdlab.data.privileged.PrivilegedDataset` yielding ``(x_degraded, y, x_clean)``.
        privileged_factor: strength of that degradation.
        classes: keep only these original labels, relabelled ``0..len(classes)-1`` in the given order
            (a label-space subset, e.g. the source and target tasks of transfer learning); None = all.
        transfer, transfer_n, transfer_channels, transfer_size, steps_per_epoch, batch_size: the transfer
            source (:func:`kdlab.data.transfer.build_transfer`); None = the training set.
        channels: translation tasks only: convert both domains (1 = grey by luma, 3 = RGB); None = as they are.
        direction: translation tasks only: ``'AtoB'`` or ``'BtoA'`` (swap source and target).

    Returns:
        :class:`Datasets`.

    Raises:
        DataNotFoundError, UnknownNameError: see :func:`load_split`.
        ValueError: bad or repeated ``classes`` (names the accepted range), bad ``val_size``,
            ``n_per_class`` larger than a class's remaining examples (names the class), ``max_test`` < 1, a set of fewer than 2 classes.
    """
    from kdlab.data.splits import stratified_subset
    from kdlab.data.translation import build_translation, is_translation

    if is_translation(name):
        extra = {k: v for k, v in (("privileged", privileged), ("classes", classes), ("transfer", transfer),
                                   ("transfer_n", transfer_n), ("transfer_channels", transfer_channels),
                                   ("transfer_size", transfer_size)) if v not in (None, TRANSFER_LABELLED)}
        if extra:
            raise ValueError(f"data.name = {name!r} is a translation task; "
                             f"{', '.join(f'data.{k}={v!r}' for k, v in extra.items())} apply to classification data "
                             "sets only: unset them")
        train, val, test, spec = build_translation(name, root, val_size, n_per_class, subset_seed, augment, download,
                                                   image_size, max_test, channels, direction, TEST_SUBSET_SEED)
        return Datasets(train=train, val=val, test=test, spec=spec)
    if channels is not None or direction != "AtoB":
        raise ValueError(f"data.channels = {channels!r} / data.direction = {direction!r} apply to translation tasks "
                         f"only; data.name = {name!r} is a single data set: unset them")
    spec = dataset_spec(name, root=root, image_size=image_size)
    if spec.num_classes < 2:  # an image folder of one class subfolder trained a 1-class "classifier" (loss 0)
        raise ValueError(f"data.name = {name!r} has {spec.num_classes} class ({', '.join(spec.class_names)}); accepted: a "
                         f"labelled set of at least 2 classes (an image folder holds one subfolder per class)")
    train_x, train_y = load_split(name, "train", root=root, download=download, image_size=image_size)
    test_x, test_y = load_split(name, "test", root=root, download=download, image_size=image_size)
    if classes is not None:
        keep_classes = [int(c) for c in classes]
        if not keep_classes or len(set(keep_classes)) != len(keep_classes) or any(
            c < 0 or c >= spec.num_classes for c in keep_classes
        ):
            raise ValueError(
                f"data.classes = {list(classes)} must be distinct labels in [0, {spec.num_classes}) of {name!r}"
            )
        lut = torch.full((spec.num_classes,), -1, dtype=torch.long)
        lut[torch.tensor(keep_classes)] = torch.arange(len(keep_classes))
        names = [spec.class_names[c] for c in keep_classes] if spec.class_names else []
        spec = replace(spec, num_classes=len(keep_classes), class_names=names)
        tr, te = lut[train_y.long()] >= 0, lut[test_y.long()] >= 0
        train_x, train_y = train_x[tr], lut[train_y.long()[tr]]
        test_x, test_y = test_x[te], lut[test_y.long()[te]]

    given = given_validation(name)
    if given is not None:  # the user's own validation set: the last ``given`` rows (kdlab.data.user)
        if classes is not None:
            raise ValueError(f"data.classes = {list(classes)} with data set {name!r}, which has a given validation "
                             f"set: select the classes in your Datasets instead")
        train_idx, val_idx = torch.arange(len(train_y) - given), torch.arange(len(train_y) - given, len(train_y))
    else:
        train_idx, val_idx = train_val_split(train_y, val_size, subset_seed)
    if n_per_class is not None:
        train_idx = stratified_subset(train_y, n_per_class, subset_seed, candidates=train_idx)

    if max_test is not None:
        if isinstance(max_test, bool) or not isinstance(max_test, int) or max_test < 1:
            raise ValueError(f"max_test must be an int >= 1 or None, got {max_test!r}")
        if max_test < len(test_y):
            _, keep = train_val_split(test_y, max_test, TEST_SUBSET_SEED)
            test_x, test_y = test_x[keep], test_y[keep]

    flip = hflip_ok(name)

    def make(idx: Optional[torch.Tensor], x: torch.Tensor, y: torch.Tensor, aug: bool) -> InMemoryDataset:
        if idx is not None:
            x, y = x[idx], y[idx]
        return InMemoryDataset(x, y, spec.mean, spec.std, augment=aug, hflip=flip)

    out = Datasets(
        train=make(train_idx, train_x, train_y, augment),
        val=make(val_idx, train_x, train_y, False) if len(val_idx) else None,
        test=make(None, test_x, test_y, False),
        spec=spec,
    )
    if privileged is not None:
        from kdlab.data.privileged import PrivilegedDataset

        wrap = lambda d: PrivilegedDataset(d, privileged, privileged_factor)  # noqa: E731
        out = Datasets(train=wrap(out.train), val=wrap(out.val) if out.val is not None else None,
                       test=wrap(out.test), spec=spec)
    if transfer not in (None, TRANSFER_LABELLED) or any(v is not None for v in (transfer_n, transfer_channels, transfer_size,
                                                                                synth_real)):
        out.transfer = build_transfer(transfer, spec, out.train, root=root, download=download, n=transfer_n,
                                      seed=subset_seed, channels=transfer_channels, size=transfer_size,
                                      steps_per_epoch=steps_per_epoch, batch_size=batch_size, augment=augment,
                                      synth_real=synth_real)
    return out
