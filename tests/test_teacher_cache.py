"""The teacher-output cache (kdlab.games.teacher_cache, trainer.teacher_cache).

The promise: the cached run trains the same student, bit for bit on CPU with the same seed, as the
uncached one, for output (KD), feature (hints) and input-Jacobian terms; a changed teacher or subset
is another cache; unsafe configurations are refused (``on``) or left uncached (``auto``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdlab.config import ConfigError
from kdlab.data import make_loader
from kdlab.engine import save_classifier
from kdlab.methods import METHODS
from kdlab.models import build_model
from kdlab.runner import datasets_for, load_run_config, train

# 130 rows in batches of 32: four full batches and a partial one of 2 (its own table)
DATA = {"n_per_class": 13, "batch_size": 32, "val_size": 100, "max_test": 200}
STUDENT = {"name": "lenet", "kwargs": {"channels": [4, 8], "fc": 32}}
TERMS = {
    "kd": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0, "temperature": 4.0}},
    "hints": {"ce": {"weight": 1.0}, "hints": {"weight": 0.5, "layers": [["conv2", "conv2"]]}},
    "jacobian": {"ce": {"weight": 1.0}, "jacobian": {"weight": 1.0, "select": "top"}},
}


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[8, 16], fc=64)
    return save_classifier(net, tmp_path_factory.mktemp("t") / "teacher.safetensors", data="fashion-mnist")


def _cfg(make_config, teacher: Path, name: str, terms: str = "kd", overrides=(), **trainer):
    return load_run_config([make_config(
        name=name, method="distill", teacher={"checkpoint": str(teacher)}, data=DATA, model=STUDENT,
        objective={"student": TERMS[terms]}, trainer={"epochs": 2, **trainer})], list(overrides))


@pytest.mark.parametrize("terms", sorted(TERMS))
def test_exact_cached_student_is_bit_identical(make_config, teacher, terms):
    off = train(_cfg(make_config, teacher, f"{terms}-off", terms, teacher_cache="off"))
    on = train(_cfg(make_config, teacher, f"{terms}-on", terms, teacher_cache="on", teacher_cache_exact=True))
    a, b = load_file(off / "student.safetensors"), load_file(on / "student.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    summary = json.loads((on / "summary.json").read_text())
    assert summary["teacher_cache"]["location"] == "memory"
    assert summary["teacher_cache"]["batch_sizes"] == [32, 2]
    assert json.loads((off / "summary.json").read_text())["teacher_cache"]["location"] is None


def test_lookup_equals_the_teacher_on_each_row(make_config, teacher):
    """An independent recomputation: the teacher's logits and Jacobian rows, one example at a time."""
    cfg = _cfg(make_config, teacher, "rows", "jacobian")
    data = datasets_for(cfg)
    from kdlab.data import transfer_info
    from kdlab.engine import make_fabric

    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    method.setup(make_fabric(cfg.trainer))
    method.on_fit_start(data.transfer, Path(cfg.out_dir) / cfg.name, [32, 2])
    method.prebuild_teacher_cache()
    net = method.frozen["teacher"]
    idx = torch.tensor([0, 7, 129, 64])
    got = method.teacher_cache.lookup(idx, torch.zeros(4))
    for i, row in enumerate(idx.tolist()):
        x = data.transfer[row][0].unsqueeze(0).requires_grad_(True)
        logits = net(x)
        (g,) = torch.autograd.grad(logits[0, logits.argmax()], x)
        assert torch.allclose(got.out[i], logits[0].detach(), atol=1e-5)
        assert torch.allclose(got.derived["jacobian/jacobian"][i, 0], g.flatten(), atol=1e-5)


def test_shared_cache_is_reused_and_invalidated(make_config, teacher, tmp_path):
    shared = tmp_path / "shared"
    first = train(_cfg(make_config, teacher, "a", teacher_cache_dir=str(shared)))
    again = train(_cfg(make_config, teacher, "b", teacher_cache_dir=str(shared)))
    s1 = json.loads((first / "summary.json").read_text())["teacher_cache"]
    s2 = json.loads((again / "summary.json").read_text())["teacher_cache"]
    assert s1["location"] == s2["location"] and s2.get("reused") is True and not s1.get("reused")
    # another subset and other teacher weights: new keys, new directories
    train(_cfg(make_config, teacher, "c", overrides=["data.subset_seed=1"], teacher_cache_dir=str(shared)))
    torch.manual_seed(1)
    other = save_classifier(build_model("lenet", num_classes=10, in_channels=1, image_size=28, channels=[8, 16], fc=64),
                            tmp_path / "other.safetensors", data="fashion-mnist")
    train(_cfg(make_config, other, "d", teacher_cache_dir=str(shared)))
    assert len([p for p in shared.iterdir() if p.is_dir()]) == 3


def test_large_cache_spills_to_the_run_directory(make_config, teacher):
    run = train(_cfg(make_config, teacher, "spill", teacher_cache_memory_mb=0))
    where = json.loads((run / "summary.json").read_text())["teacher_cache"]["location"]
    assert Path(where).parent == run / "teacher_cache"
    assert (Path(where) / "meta.json").is_file()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_directory_falls_back_with_a_warning(make_config, teacher, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.warns(UserWarning, match="not writable"):
            run = train(_cfg(make_config, teacher, "ro", teacher_cache_dir=str(ro / "cache")))
    finally:
        ro.chmod(0o700)
    assert json.loads((run / "summary.json").read_text())["teacher_cache"]["location"] == "memory"


def test_unwritable_directory_falls_back_file_in_the_way(make_config, teacher, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.warns(UserWarning, match="not writable"):
        run = train(_cfg(make_config, teacher, "blocked", teacher_cache_dir=str(blocker / "cache")))
    assert json.loads((run / "summary.json").read_text())["teacher_cache"]["location"] == "memory"


@pytest.mark.parametrize("change, words", [
    ({"data": {"augment": True}}, "data.augment"),
    ({"players": {"input_noise": 0.1}}, "players.input_noise"),
    ({"objective": {"student": {"attention_jacobian": {"weight": 1.0, "layers": [["conv2", "conv2"]]}}}}, "attention_jacobian"),
])
def test_unsafe_configurations_are_refused_when_on_and_skipped_when_auto(make_config, teacher, change, words):
    base = make_config(name="u", method="distill", teacher={"checkpoint": str(teacher)}, data=DATA, model=STUDENT,
                       objective={"student": TERMS["kd"]})
    for section, values in change.items():
        base[section] = {**base.get(section, {}), **values}
    cfg = load_run_config([base], ["trainer.teacher_cache=on"])
    data = datasets_for(cfg)
    from kdlab.data import transfer_info

    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    cfg = load_run_config([base], ["trainer.teacher_cache=auto"])
    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    assert any(words in why for why in method.cache_blockers)


def test_methods_whose_teacher_trains_refuse_on(make_config, teacher):
    cfg = load_run_config([make_config(name="k", method="kdgan", teacher={"checkpoint": str(teacher)}, data=DATA,
                                       trainer={"teacher_cache": "on"})])
    data = datasets_for(cfg)
    with pytest.raises(ConfigError, match="teacher_cache=on: method 'kdgan'"):
        METHODS.get("kdgan")(cfg, data.spec, None)


def test_loader_batch_sizes_match_the_tables(make_config, teacher):
    cfg = _cfg(make_config, teacher, "sizes")
    data = datasets_for(cfg)
    sizes = {len(b) for b in make_loader(data.transfer, 32, shuffle=True, seed=0)}
    assert sizes == {32, 2}


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want| per row, the largest over rows."""
    return float(((got - want).abs().amax(1) / want.abs().amax(1)).max())


def _teacher_rows(net, dataset) -> torch.Tensor:
    """The teacher's eval logits [N, 10], one example at a time (independent of any batching)."""
    with torch.no_grad():
        return torch.cat([net(dataset[i][0].unsqueeze(0)) for i in range(len(dataset))])


def test_one_pass_rows_equal_the_teacher_every_row(make_config, teacher):
    """One pass at batch 32 over 130 rows (the last chunk a partial batch of 2): every row equals the
    teacher's eval output on that example alone, to 1e-6 relative; one table, one teacher pass."""
    from kdlab.data import transfer_info
    from kdlab.engine import make_fabric
    from kdlab.games.teacher_cache import build_teacher_cache

    cfg = _cfg(make_config, teacher, "one-pass")
    data = datasets_for(cfg)
    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    method.setup(make_fabric(cfg.trainer))
    calls = []

    def compute(b):
        calls.append(len(b))
        return method.teacher_forward(b.x, b)

    cache = build_teacher_cache(data.transfer, compute, [32, 2], {})
    assert calls == [32, 32, 32, 32, 2] and list(cache.tables) == [32]
    want = _teacher_rows(method.frozen["teacher"], data.transfer)
    got = cache.lookup(torch.arange(130), torch.zeros(130)).out
    assert _rel_err(got, want) <= 1e-6
    # a batch of the last partial size reads the same single table
    assert torch.equal(cache.lookup(torch.tensor([128, 129]), torch.zeros(2)).out, got[128:])


def test_cache_filled_during_epoch_1(make_config, teacher):
    """In memory the table is filled by epoch 1's own teacher passes: epoch 1 is the uncached run bit for
    bit, every row then equals the teacher's eval output (1e-6 relative), and a run resumed after epoch 1
    (whose cache is prebuilt before training, in epoch 1's batches) ends with the same student, bit for
    bit, as the run whose cache epoch 1 filled."""
    off1 = train(_cfg(make_config, teacher, "off1", overrides=["trainer.epochs=1"], teacher_cache="off"))
    lazy1 = train(_cfg(make_config, teacher, "lazy1", overrides=["trainer.epochs=1"], teacher_cache="on"))
    a, b = load_file(off1 / "student.safetensors"), load_file(lazy1 / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    s = json.loads((lazy1 / "summary.json").read_text())["teacher_cache"]
    assert s["built"] == "during epoch 1" and s["batch_sizes"] == [32] and "rows_missing" not in s

    lazy = train(_cfg(make_config, teacher, "lazy"))
    resumed = train(_cfg(make_config, teacher, "lazy1", overrides=["trainer.epochs=2"]), resume=True)
    assert json.loads((resumed / "summary.json").read_text())["teacher_cache"]["built"] == "before epoch 1"
    a, b = load_file(lazy / "student.safetensors"), load_file(resumed / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_auto_builds_no_cache_for_a_one_epoch_run(make_config, teacher):
    """No later epoch reads a one-epoch run's table, so ``auto`` fills none (``summary.json`` says why) and the
    run trains the uncached student, bit for bit; ``on`` still fills it."""
    off1 = train(_cfg(make_config, teacher, "off-1ep", overrides=["trainer.epochs=1"], teacher_cache="off"))
    auto1 = train(_cfg(make_config, teacher, "auto-1ep", overrides=["trainer.epochs=1"]))
    s = json.loads((auto1 / "summary.json").read_text())["teacher_cache"]
    assert s["location"] is None and "trainer.epochs=1" in s["why_not"]
    a, b = load_file(off1 / "student.safetensors"), load_file(auto1 / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_filled_table_equals_the_teacher_every_row(make_config, teacher):
    """After epoch 1 the filled table holds every row (the last partial batch's too) to 1e-6 relative."""
    from kdlab.data import transfer_info
    from kdlab.engine import Trainer, make_fabric

    cfg = _cfg(make_config, teacher, "filled", overrides=["trainer.epochs=1"], teacher_cache="on")
    data = datasets_for(cfg)
    method = METHODS.get("distill")(cfg, data.spec, transfer_info(data.transfer))
    Trainer(cfg, Path(cfg.out_dir) / cfg.name, make_fabric(cfg.trainer)).fit(method, data.transfer)
    cache = method.teacher_cache
    assert cache.filled is None and cache.info["built"] == "during epoch 1"
    want = _teacher_rows(method.frozen["teacher"], data.transfer)
    assert _rel_err(cache.tables[32]["out"], want) <= 1e-6


def test_filling_cache_computes_only_missing_rows_after_epoch_1():
    """Epoch 1 computes every batch; later, only batches with a row not seen yet (e.g. under
    trainer.limit_train_batches); complete, it never computes again. A fake teacher: out = index."""
    from kdlab.games.teacher_cache import TeacherCache
    from kdlab.terms import Outputs

    cache = TeacherCache.filling(6, 2)
    calls = []

    def ask(rows):
        index = torch.tensor(rows)

        def compute():
            calls.append(rows)
            return Outputs(out=index.float().unsqueeze(1).repeat(1, 3))
        return cache.outputs(index, torch.zeros(len(rows)), compute).out[:, 0].tolist()

    assert ask([0, 1]) == [0, 1] and ask([0, 2]) == [0, 2]  # epoch 1: both computed
    cache.end_epoch()
    assert cache.filled is not None and cache.describe()["rows_missing"] == 3
    assert ask([2, 1]) == [2, 1] and len(calls) == 2  # all seen: read from the table
    assert ask([3, 4]) == [3, 4] and ask([5]) == [5] and len(calls) == 4
    cache.end_epoch()
    assert cache.filled is None and ask([5, 0, 3]) == [5, 0, 3] and len(calls) == 4


def test_one_pass_order_covers_every_row():
    """A first-epoch order that leaves rows out (a DDP rank's shard, repeats included) is completed by
    consecutive chunks of the rest: every row is computed, each batch at most the batch size."""
    from kdlab.games.teacher_cache import _one_pass

    plan = _one_pass(10, 3, [[7, 2, 9], [4, 7]])
    assert [r.tolist() for r, _ in plan] == [[7, 2, 9], [4, 7], [0, 1, 3], [5, 6, 8]]
    assert all(fresh == len(r) for r, fresh in plan)
    assert [r.tolist() for r, _ in _one_pass(5, 2, None)] == [[0, 1], [2, 3], [4]]


@pytest.mark.parametrize("damage", ["zero-filled", "truncated", "no hashes"])
def test_a_damaged_shared_cache_is_rebuilt_with_a_warning(make_config, teacher, tmp_path, damage):
    """Each table of a disk cache carries its sha256 in meta.json, checked when the cache is reused: a table
    zero-filled or truncated after it was written (or a cache without hashes) is rebuilt, with a warning,
    and the run ends as a run on a fresh cache."""
    shared = tmp_path / "shared"
    first = train(_cfg(make_config, teacher, "clean", teacher_cache_dir=str(shared)))
    (cache,) = [p for p in shared.iterdir() if p.is_dir()]
    table = sorted(cache.glob("b*.npy"))[0]
    if damage == "zero-filled":
        head = 128  # keep the .npy header: the file still loads, with zeros in place of the logits
        raw = table.read_bytes()
        table.write_bytes(raw[:head] + bytes(len(raw) - head))
    elif damage == "truncated":
        table.write_bytes(table.read_bytes()[:-100])
    else:
        meta = json.loads((cache / "meta.json").read_text())
        del meta["sha256"]
        (cache / "meta.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="rebuilding it"):
        again = train(_cfg(make_config, teacher, "again", teacher_cache_dir=str(shared)))
    s2 = json.loads((again / "summary.json").read_text())["teacher_cache"]
    assert not s2.get("reused")
    a, b = load_file(first / "student.safetensors"), load_file(again / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((cache / "meta.json").read_text())["sha256"]  # the rebuilt cache has its hashes again
