"""Data sets by name, stratified subsets, in-memory datasets, seeded loaders and noise.

Public API (see each docstring):

* :data:`DATASETS`, :class:`DataSpec`, :func:`dataset_spec`, :func:`load_split`, :func:`data_root`,
  :class:`DataNotFoundError` -- named data sets (``fashion-mnist`` default, ``mnist``, ``cifar10``,
  ``cifar100``, ``svhn``, ``mnist-digits``, ``skimage-patches``, ``imagefolder:<path>``).
* :class:`InMemoryDataset`, :func:`collate_batched` -- uint8 tensors normalised on the fly, batched access.
* :func:`stratified_subset`, :func:`train_val_split` -- seed-reproducible stratified index sets.
* :class:`Datasets`, :func:`build_datasets` -- train / val / test of one run.
* :func:`make_loader`, :class:`SeededSampler` -- shuffling order a pure function of (seed, epoch).
* :func:`add_gaussian_noise` -- input corruption in normalised units.
* :class:`Batch` -- the named parts of a batch (x, y, x_teacher, index).
* :func:`build_transfer`, :class:`NoData` -- what the student trains on (labelled subset, unlabelled
  out-of-domain images, or nothing: data-free).
* :func:`build_transfer`, :class:`NoData` -- the transfer source (training subset, out-of-domain
  images or data-free), config ``data.transfer``.
* :class:`TranslationDataset`, :data:`TRANSLATION_TASKS` -- image-to-image tasks (``edges2fashion``,
  ``fashion2digits``, ``unpaired:<a>,<b>``, ``paired-folder:<path>``, ``unpaired-folder:<path>``) whose
  batches carry ``target``; config ``data.channels`` / ``data.direction`` (:mod:`kdlab.data.translation`).
* :func:`select_transfer`, :func:`entropy_topk`, :func:`class_balanced` -- a teacher-ranked subset of an
  out-of-domain transfer set (MosaicKD Algorithm 1), config ``data.transfer_select`` / ``data.transfer_k``.
"""
from kdlab.data.batch import Batch, as_batch
from kdlab.data.build import Datasets, build_datasets
from kdlab.data.fashion import FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR
from kdlab.data.loaders import DeviceBatches, SeededSampler, epoch_seed, in_memory_rows, make_loader
from kdlab.data.memory import InMemoryDataset, collate_batched
from kdlab.data.noise import add_gaussian_noise
from kdlab.data.privileged import DEGRADATIONS, PrivilegedDataset, degrade
from kdlab.data.paths import DataNotFoundError, data_root
from kdlab.data.sets import DATASETS, DEFAULT_DATASET, DataSpec, dataset_spec, hflip_ok, load_split
from kdlab.data.splits import stratified_subset, train_val_split
from kdlab.data.selection import SELECTION_RULES, class_balanced, entropy_topk, select_transfer
from kdlab.data.translation import TASKS as TRANSLATION_TASKS
from kdlab.data.translation_set import TranslationDataset
from kdlab.data.transfer import TRANSFER_LABELLED, TRANSFER_NONE, TRANSFER_SYNTH, NoData, TransferInfo, build_transfer, transfer_info

__all__ = [
    "Batch", "as_batch",
    "DATASETS", "DEFAULT_DATASET", "DataSpec", "dataset_spec", "load_split", "data_root", "DataNotFoundError",
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_DEBIAN_DIR", "hflip_ok",
    "InMemoryDataset", "collate_batched",
    "stratified_subset", "train_val_split",
    "Datasets", "build_datasets",
    "make_loader", "SeededSampler", "epoch_seed", "DeviceBatches", "in_memory_rows",
    "add_gaussian_noise",
    "PrivilegedDataset", "degrade", "DEGRADATIONS",
    "SELECTION_RULES", "select_transfer", "entropy_topk", "class_balanced",
    "TranslationDataset", "TRANSLATION_TASKS",
    "NoData", "TransferInfo", "build_transfer", "transfer_info", "TRANSFER_LABELLED", "TRANSFER_NONE", "TRANSFER_SYNTH",
]
