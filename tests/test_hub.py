"""``torchvision:<name>`` and ``timm:<name>`` models (kdlab.models.hub)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import small_config
from kdlab.models import build_model
from kdlab.registry import UnknownNameError
from kdlab.runner import load_run_config, train


def write_fashion_pngs(root: Path, per_class: int = 12, test_per_class: int = 4) -> Path:
    """Fashion-MNIST images written as PNG files: ``root/{train,test}/<class>/<i>.png`` (the first images of
    each class of each official split)."""
    from PIL import Image

    from kdlab.data import FASHION_MNIST_CLASSES, load_split

    for split, n in (("train", per_class), ("test", test_per_class)):
        x, y = load_split("fashion-mnist", split)
        for c, name in enumerate(FASHION_MNIST_CLASSES):
            folder = root / split / name.replace("/", "-").replace(" ", "_")
            folder.mkdir(parents=True, exist_ok=True)
            for i, j in enumerate(torch.nonzero(y == c).flatten()[:n].tolist()):
                Image.fromarray(x[j, 0].numpy(), mode="L").save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """An MLP teacher on Fashion-MNIST (28 px, 1 channel) and one on its PNGs as an image folder (32 px, RGB)."""
    tmp = tmp_path_factory.mktemp("hub")
    folder = write_fashion_pngs(tmp / "fmnist")
    data32 = {"name": f"imagefolder:{folder}", "image_size": 32, "val_size": 20, "n_per_class": None, "max_test": None}
    small = {"n_per_class": 10, "max_test": 100}
    return tmp, {
        28: ({"data": small}, train(load_run_config([small_config(tmp, name="t28", trainer={"epochs": 1}, data=small)]))),
        32: ({"data": data32}, train(load_run_config([small_config(tmp, name="t32", trainer={"epochs": 1}, data=data32)]))),
    }


@pytest.mark.parametrize("size", [28, 32])
@pytest.mark.parametrize("student", ["torchvision:resnet18", "timm:mobilenetv3_small_050"])
def test_library_students_distil_for_one_epoch(teachers, student, size):
    """Smoke test (plus the input channels and class count that reached the library's network): one epoch of
    KD + CE from a library student, on 28 px grey Fashion-MNIST and its 32 px RGB image folder."""
    if student.startswith("timm:"):
        pytest.importorskip("timm")
    tmp, by_size = teachers
    data, teacher = by_size[size]
    name = f"{student.split(':')[0]}{size}"
    cfg = small_config(tmp, name=name, method="distill", teacher={"checkpoint": str(teacher)}, **data,
                       model={"name": student, "kwargs": {}}, trainer={"epochs": 1},
                       objective={"student": {"ce": {"weight": 1.0}, "kd": {"weight": 1.0}}})
    run = train(load_run_config([cfg]))
    from kdlab.engine import load_classifier

    net = load_classifier(run)
    channels = 1 if size == 28 else 3
    stem = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert (net.arch, stem.in_channels, net.num_classes, net.image_size) == (student, channels, 10, size)
    assert net(torch.zeros(2, channels, size, size)).shape == (2, 10)


def test_pretrained_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    """ImageNet-shaped weights in the hub cache: every matching tensor is loaded, the 1000-class head is not, and
    for one input channel the stem's kernels are the RGB kernels summed (the grey image's response kept)."""
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"put resnet18-f37072fd.pth .* at .*checkpoints/resnet18-f37072fd.pth"):
        build_model("torchvision:resnet18", 10, 1, 28, pretrained=True)
    torch.manual_seed(3)
    ref = torchvision.models.resnet18()
    (tmp_path / "checkpoints").mkdir()
    torch.save(ref.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    net = build_model("torchvision:resnet18", 10, 1, 28, pretrained=True)
    assert torch.equal(net.conv1.weight, ref.conv1.weight.sum(1, keepdim=True))
    assert torch.equal(net.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert net.fc.weight.shape == (10, 512)
    grey = torch.rand(2, 1, 28, 28)
    assert torch.allclose(net.conv1(grey), ref.conv1(grey.expand(-1, 3, -1, -1)), atol=1e-5)
    assert "pretrained" not in net.arch_kwargs  # initial weights only: reloading needs no hub file


@pytest.mark.parametrize("name, nearest", [("torchvision:resnet81", "resnet18"),
                                           ("timm:mobilenetv3_small_05", "mobilenetv3_small_050")])
def test_unknown_library_names_list_the_nearest(name, nearest):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    with pytest.raises(UnknownNameError, match=f"unknown .* model '{name.split(':')[1]}'; nearest names: .*{nearest}"):
        build_model(name)
