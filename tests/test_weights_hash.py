"""The content hash of checkpoints and safetensors files (kdlab.engine.checkpoint)."""
from __future__ import annotations

import hashlib
import struct

import pytest
import torch

from kdlab.engine.checkpoint import (WeightsError, load_checkpoint, load_classifier, read_safetensors_metadata,
                                     save_checkpoint, save_classifier, state_digest)
from kdlab.models import build_model


def test_digest_is_the_documented_walk():
    # written out by hand from the module docstring: sorted keys, tensors as dtype, shape and raw bytes
    want = hashlib.sha256(b"{2" + b"'a':" + b"Ttorch.float32(1,):" + struct.pack("<f", 1.5)
                          + b"'b':" + b"int:3;" + b"}").hexdigest()
    assert state_digest({"b": 3, "a": torch.tensor([1.5])}) == want


def test_checkpoint_hash_covers_tensors_and_plain_values(tmp_path):
    state = {"format": "kdlab-run-1", "epoch": 3, "model": {"w": torch.arange(6.0).reshape(2, 3)}}
    path = save_checkpoint(state, tmp_path / "last.ckpt")
    raw = torch.load(path, weights_only=True)
    assert raw["sha256"] == state_digest(state)
    back = load_checkpoint(path)
    assert "sha256" not in back and back["epoch"] == 3 and torch.equal(back["model"]["w"], state["model"]["w"])
    torch.save({**raw, "epoch": 4}, tmp_path / "edited.ckpt")  # a plain value changed, the hash kept
    with pytest.raises(WeightsError, match="edited.ckpt.*hash mismatch"):
        load_checkpoint(tmp_path / "edited.ckpt")
    old = {k: v for k, v in raw.items() if k != "sha256"}
    torch.save(old, tmp_path / "old.ckpt")  # written before the hash existed: loads unchecked
    assert load_checkpoint(tmp_path / "old.ckpt")["epoch"] == 3


def test_safetensors_hash_and_old_files(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = build_model("mlp", num_classes=10, in_channels=1, image_size=28, hidden=[8])
    path = save_classifier(model, tmp_path / "m.safetensors", data="fashion-mnist")
    meta = read_safetensors_metadata(path)
    assert len(meta["sha256"]) == 64
    x = torch.randn(2, 1, 28, 28)
    assert torch.equal(load_classifier(path)(x), model.eval()(x))
    old = {k: v for k, v in meta.items() if k != "sha256"}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "old.safetensors"), metadata=old)
    assert torch.equal(load_classifier(tmp_path / "old.safetensors")(x), model(x))
    # metadata is covered too: another architecture written into the header is caught before building it
    data = path.read_bytes().replace(b'\\"hidden\\": [8]', b'\\"hidden\\": [9]')
    assert data != path.read_bytes()
    (tmp_path / "meta.safetensors").write_bytes(data)
    with pytest.raises(WeightsError, match="hash mismatch"):
        load_classifier(tmp_path / "meta.safetensors")


def test_resume_from_an_edited_unhashed_checkpoint_names_the_file(tmp_path):
    """A last.ckpt written before hashes existed, with a player's tensor edited to another shape: --resume
    refuses it with the file's name, not a traceback from load_state_dict."""
    from conftest import small_config
    from kdlab.engine.checkpoint import WeightsError
    from kdlab.runner import load_run_config, train

    cfg = small_config(tmp_path, name="old", trainer={"epochs": 1})
    run = train(load_run_config([cfg]))
    path = run / "checkpoints" / "last.ckpt"
    state = torch.load(path, weights_only=True)
    state.pop("sha256", None)
    player = next(iter(state["method"]["players"].values()))
    key = next(k for k, v in player.items() if v.dim() == 2)
    player[key] = torch.zeros(3, 3)
    torch.save(state, path)
    cfg["trainer"] = {**cfg["trainer"], "epochs": 2}
    with pytest.raises(WeightsError, match="last.ckpt.*does not fit"):
        train(load_run_config([cfg]), resume=True)


def test_the_same_weights_give_the_same_file_bytes(tmp_path):
    """safetensors writes ``__metadata__`` in a random order at each save; kdlab's files hold it sorted, so
    saving the same weights twice gives the same bytes (and sha256), which safetensors itself reads back."""
    from safetensors import safe_open

    torch.manual_seed(0)
    net = build_model("mlp", hidden=[8])
    paths = [save_classifier(net, tmp_path / f"w{i}.safetensors", data="fashion-mnist", note='é/"\n') for i in range(6)]
    assert len({p.read_bytes() for p in paths}) == 1
    raw = paths[0].read_bytes()
    n = int.from_bytes(raw[:8], "little")
    keys = list(__import__("json").loads(raw[8:8 + n])["__metadata__"])
    assert keys == sorted(keys) and len(keys) > 5
    with safe_open(paths[0], "pt") as f:
        assert f.metadata()["note"] == 'é/"\n' and f.metadata()["data"] == "fashion-mnist"
        for k, v in net.state_dict().items():
            assert torch.equal(f.get_tensor(k), v)
    assert read_safetensors_metadata(paths[0])["note"] == 'é/"\n'
