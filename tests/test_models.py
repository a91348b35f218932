"""Tests for kdlab.models: shapes, features by hooks, rebuilds (parameter counts: test_model_param_counts.py)."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import (
    MODELS,
    Classifier,
    UnknownFeatureError,
    build_model,
    extract_features,
    feature_shapes,
)
from kdlab.registry import UnknownNameError


CONTRACT_NAMES = ["mlp", "lenet", "vgg4", "vgg9", "resnet20", "resnet32", "resnet56", "resnet110",
                  "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "wrn_28_10"]
# registered names plus names only reachable through the resnet{D} / wrn_D_W patterns
ALL_NAMES = sorted(set(MODELS.names()) | {"wrn_16_1", "wrn_40_2", "wrn_22_1", "resnet8"})
SETTINGS = [(1, 28, 10), (3, 32, 100)]  # (in_channels, image_size, num_classes)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These small-batch convolutions are fastest on one thread; with two OpenMP threads on a busy
    2-core machine each conv was measured ~40x slower (spin-waiting). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def n_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


# --------------------------------------------------------------------------- registry and shapes

def test_registry_lists_contract_names():
    for name in CONTRACT_NAMES:
        assert name in MODELS.names(), name
    assert all(isinstance(v, str) for v in MODELS.describe().values())


@pytest.mark.parametrize("c,s,k", SETTINGS)
@pytest.mark.parametrize("name", ALL_NAMES)
def test_builds_and_output_shape(name, c, s, k):
    model = build_model(name, num_classes=k, in_channels=c, image_size=s)
    assert isinstance(model, Classifier)
    assert (model.arch, model.num_classes, model.in_channels, model.image_size) == (name, k, c, s)
    model.eval()
    with torch.no_grad():
        y = model(torch.randn(2, c, s, s))
    assert y.shape == (2, k)
    assert torch.isfinite(y).all()
    json.dumps(model.arch_kwargs)  # checkpoints store it
    assert list(model.feature_layers)  # every model exposes features
    modules = dict(model.named_modules())
    assert all(path in modules for path in model.feature_layers.values())


def ceil_half(s, times):
    for _ in range(times):
        s = math.ceil(s / 2)
    return s


EXPECTED_FEATURES = {
    # (name, in_channels, image_size) -> {feature: per-sample shape}, derived from the papers / contract
    ("vgg9", 3, 32): {"pool1": (64, 16, 16), "pool2": (128, 8, 8), "pool3": (256, 4, 4),
                      "pool4": (512, 2, 2), "pool5": (512, 1, 1), "gap": (512,)},
    # ceil-mode pooling: 28 -> 14 -> 7 -> 4 -> 2 -> 1
    ("vgg9", 1, 28): {"pool1": (64, 14, 14), "pool2": (128, 7, 7), "pool3": (256, 4, 4),
                      "pool4": (512, 2, 2), "pool5": (512, 1, 1), "gap": (512,)},
    ("vgg4", 1, 28): {"pool1": (64, 14, 14), "pool2": (128, 7, 7), "pool3": (512, 4, 4), "gap": (512,)},
    ("vgg4", 3, 32): {"pool1": (64, 16, 16), "pool2": (128, 8, 8), "pool3": (512, 4, 4), "gap": (512,)},
    ("lenet", 1, 28): {"conv1": (32, 28, 28), "pool1": (32, 14, 14), "conv2": (64, 14, 14),
                       "pool2": (64, 7, 7), "fc1": (1024,)},
    ("lenet", 3, 32): {"conv1": (64, 32, 32), "pool1": (64, 16, 16), "conv2": (128, 16, 16),
                       "pool2": (128, 8, 8), "fc1": (1024,)},
    ("mlp", 1, 28): {"fc1": (800,), "fc2": (800,)},
    ("resnet20", 1, 28): {"layer1": (16, 28, 28), "layer2": (32, 14, 14), "layer3": (64, 7, 7), "gap": (64,)},
    ("resnet56", 3, 32): {"layer1": (16, 32, 32), "layer2": (32, 16, 16), "layer3": (64, 8, 8), "gap": (64,)},
    ("wrn_40_2", 3, 32): {"block1": (32, 32, 32), "block2": (64, 16, 16), "block3": (128, 8, 8), "gap": (128,)},
    ("wrn_16_1", 1, 28): {"block1": (16, 28, 28), "block2": (32, 14, 14), "block3": (64, 7, 7), "gap": (64,)},
}


@pytest.mark.parametrize("key", list(EXPECTED_FEATURES), ids=lambda k: f"{k[0]}-{k[1]}x{k[2]}")
def test_feature_names_and_shapes(key):
    name, c, s = key
    model = build_model(name, num_classes=10, in_channels=c, image_size=s)
    expected = EXPECTED_FEATURES[key]
    assert list(model.feature_layers) == list(expected)  # names, in forward order
    model.train()
    assert feature_shapes(model) == expected
    assert model.training  # mode restored
    # a batch gives the same per-sample shapes
    _, feats = extract_features(model, torch.randn(3, c, s, s), list(expected))
    assert {n: tuple(f.shape) for n, f in feats.items()} == {n: (3, *v) for n, v in expected.items()}


@pytest.mark.parametrize("s", [28, 32, 30])
def test_vgg9_pool_sizes_follow_ceil_formula(s):
    model = build_model("vgg9", in_channels=1, image_size=s)
    shapes = feature_shapes(model, [f"pool{i}" for i in range(1, 6)])
    for i in range(1, 6):
        assert shapes[f"pool{i}"][1:] == (ceil_half(s, i), ceil_half(s, i))


def test_vgg_width_multiplier_and_feature_subset():
    model = build_model("vgg4", width=0.5, image_size=32, in_channels=3)
    assert feature_shapes(model, ["pool2", "gap"]) == {"pool2": (64, 8, 8), "gap": (256,)}


# --------------------------------------------------------------------------- extract_features

def manual_lenet_pool2(model, x):
    """Independent functional re-implementation of the LeNet up to pool2 from its weights."""
    w1, b1 = model.conv1[0].weight, model.conv1[0].bias
    w2, b2 = model.conv2[0].weight, model.conv2[0].bias
    h = F.max_pool2d(F.relu(F.conv2d(x, w1, b1, padding=2)), 2)
    return F.max_pool2d(F.relu(F.conv2d(h, w2, b2, padding=2)), 2)


def count_forwards(model):
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_extract_features_lenet_matches_manual_and_forward():
    torch.manual_seed(0)
    model = build_model("lenet").eval()
    x = torch.randn(4, 1, 28, 28)
    calls, h = count_forwards(model)
    logits, feats = extract_features(model, x, ["pool2", "fc1"])
    h.remove()
    assert len(calls) == 1
    torch.testing.assert_close(logits, model(x))
    p2 = manual_lenet_pool2(model, x)
    torch.testing.assert_close(feats["pool2"], p2)
    fc1 = F.relu(F.linear(p2.flatten(1), model.fc1[0].weight, model.fc1[0].bias))
    torch.testing.assert_close(feats["fc1"], fc1)
    torch.testing.assert_close(logits, F.linear(fc1, model.fc.weight, model.fc.bias))


def test_extract_features_mlp_matches_manual():
    torch.manual_seed(0)
    model = build_model("mlp", hidden=[64, 32]).eval()
    x = torch.randn(5, 1, 28, 28)
    logits, feats = extract_features(model, x, ["fc1", "fc2"])
    lin = [m for m in model.modules() if isinstance(m, nn.Linear)]
    h1 = F.relu(x.flatten(1) @ lin[0].weight.T + lin[0].bias)
    h2 = F.relu(h1 @ lin[1].weight.T + lin[1].bias)
    torch.testing.assert_close(feats["fc1"], h1)
    torch.testing.assert_close(feats["fc2"], h2)
    torch.testing.assert_close(logits, h2 @ lin[2].weight.T + lin[2].bias)


@pytest.mark.parametrize("name,c,s", [("vgg9", 3, 32), ("resnet20", 1, 28), ("wrn_16_1", 3, 32), ("vgg4", 1, 28)])
def test_extract_features_matches_torchvision_fx_extractor(name, c, s):
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.manual_seed(0)
    model = build_model(name, in_channels=c, image_size=s).eval()
    x = torch.randn(2, c, s, s)
    names = list(model.feature_layers)
    calls, h = count_forwards(model)
    logits, feats = extract_features(model, x, names)
    h.remove()
    assert len(calls) == 1  # one forward pass for all features
    fx = create_feature_extractor(model, {model.feature_layers[n]: n for n in names} | {"fc": "logits"})
    ref = fx(x)
    torch.testing.assert_close(logits, ref["logits"])
    for n in names:
        torch.testing.assert_close(feats[n], ref[n])


def test_vgg9_pool2_matches_running_submodules_by_hand_with_grad():
    torch.manual_seed(0)
    model = build_model("vgg9", in_channels=3, image_size=32).train()  # batch-stat BN is deterministic too
    x = torch.randn(3, 3, 32, 32, requires_grad=True)
    logits, feats = extract_features(model, x, ["pool2"])
    f = model.features
    manual = f.pool2(f.conv2_1(f.pool1(f.conv1_1(x))))
    torch.testing.assert_close(feats["pool2"], manual)
    # gradients flow from the feature to the input and equal those of the manual computation
    (g,) = torch.autograd.grad(feats["pool2"].pow(2).sum(), x, retain_graph=True)
    (g_ref,) = torch.autograd.grad(manual.pow(2).sum(), x)
    assert g.abs().sum() > 0
    torch.testing.assert_close(g, g_ref)


@pytest.mark.parametrize("name,feat", [("resnet20", "layer2"), ("wrn_16_1", "block1"), ("mlp", "fc1"), ("lenet", "conv1")])
def test_gradients_flow_from_feature_to_input_and_params(name, feat):
    torch.manual_seed(0)
    model = build_model(name)
    x = torch.randn(2, 1, 28, 28, requires_grad=True)
    _, feats = extract_features(model, x, [feat])
    feats[feat].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_no_inplace_overwrite_of_hooked_outputs():
    """A hooked bn2 output must still be bn2's output: the residual add must not be in place."""
    torch.manual_seed(0)
    model = build_model("resnet20").eval()
    x = torch.randn(2, 1, 28, 28)
    _, f = extract_features(model, x, ["stem", "layer1.0.bn2", "layer1.0"])
    torch.testing.assert_close(f["layer1.0"], F.relu(f["layer1.0.bn2"] + f["stem"]))
    blk = model.layer1[0]
    ref_bn2 = blk.bn2(blk.conv2(blk.relu1(blk.bn1(blk.conv1(f["stem"])))))
    torch.testing.assert_close(f["layer1.0.bn2"], ref_bn2)


def test_module_path_and_single_string_name():
    model = build_model("resnet20").eval()
    x = torch.randn(2, 1, 28, 28)
    _, f = extract_features(model, x, "layer1.0.conv1")
    assert list(f) == ["layer1.0.conv1"] and f["layer1.0.conv1"].shape == (2, 16, 28, 28)


def test_hooks_removed_after_success_and_exception():
    model = build_model("vgg4")
    before = n_hooks(model)
    extract_features(model, torch.randn(2, 1, 28, 28), ["pool1", "gap"])
    assert n_hooks(model) == before
    with pytest.raises(RuntimeError):  # wrong channel count fails inside forward, hooks registered
        extract_features(model, torch.randn(2, 3, 28, 28), ["pool1", "pool2", "gap"])
    assert n_hooks(model) == before
    # and the model still works without stray captures
    y = model(torch.randn(1, 1, 28, 28))
    assert y.shape == (1, 10)


def test_unknown_feature_lists_friendly_names():
    model = build_model("resnet20")
    with pytest.raises(UnknownFeatureError) as e:
        extract_features(model, torch.randn(1, 1, 28, 28), ["layer1", "layer9"])
    msg = str(e.value)
    assert "layer9" in msg
    for n in ("layer1", "layer2", "layer3", "gap"):
        assert n in msg
    assert isinstance(e.value, KeyError)
    assert n_hooks(model) == 0
    with pytest.raises(UnknownFeatureError):
        feature_shapes(model, ["nope"])


def test_feature_shapes_needs_input_shape_for_plain_modules():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="input_shape"):
        feature_shapes(net, ["0"])
    assert feature_shapes(net, ["0"], input_shape=(1, 8, 8)) == {"0": (4, 6, 6)}


# --------------------------------------------------------------------------- errors

def test_unknown_model_name_lists_known():
    with pytest.raises(UnknownNameError) as e:
        build_model("vgg11")
    msg = str(e.value)
    assert "vgg11" in msg
    for n in ("mlp", "lenet", "vgg4", "vgg9", "resnet20", "wrn_40_2"):
        assert n in msg


@pytest.mark.parametrize(
    "name,kwargs,exc,fragment",
    [
        ("vgg9", {"foo": 1}, TypeError, "foo"),
        ("resnet20", {"dropout": 0.1}, TypeError, "dropout"),
        ("mlp", {"dropout": 1.5}, ValueError, "dropout"),
        ("mlp", {"hidden": [800, 0]}, ValueError, "hidden"),
        ("vgg4", {"width": -1.0}, ValueError, "width"),
        ("lenet", {"channels": [32]}, ValueError, "channels"),
        ("wrn_15_2", {}, ValueError, "15"),
        ("wrn_16_0", {}, ValueError, "width"),
        ("resnet21", {}, ValueError, "21"),
        ("mlp", {"num_classes": 0}, ValueError, "num_classes"),
    ],
)
def test_bad_arguments_raise_naming_them(name, kwargs, exc, fragment):
    with pytest.raises(exc, match=fragment):
        build_model(name, **kwargs)


# --------------------------------------------------------------------------- rebuild from metadata

@pytest.mark.parametrize(
    "name,c,s,k,kwargs",
    [
        ("mlp", 1, 28, 10, {"hidden": [64, 32, 16], "dropout": 0.1}),
        ("lenet", 3, 32, 100, {"channels": [8, 16], "fc": 64, "dropout": 0.5}),
        ("lenet", 1, 28, 10, {}),
        ("vgg4", 3, 32, 100, {"width": 0.25, "dropout": 0.2}),
        ("resnet20", 1, 28, 10, {}),
        ("resnet8", 3, 32, 10, {}),
        ("wrn_16_2", 3, 32, 100, {"dropout": 0.3}),
        ("wrn_22_1", 1, 28, 10, {}),
    ],
)
def test_rebuild_from_metadata(name, c, s, k, kwargs):
    torch.manual_seed(0)
    m1 = build_model(name, num_classes=k, in_channels=c, image_size=s, **kwargs).eval()
    meta = json.loads(json.dumps({"arch": m1.arch, "arch_kwargs": m1.arch_kwargs, "num_classes": m1.num_classes,
                                  "in_channels": m1.in_channels, "image_size": m1.image_size}))
    m2 = build_model(meta["arch"], meta["num_classes"], meta["in_channels"], meta["image_size"],
                     **meta["arch_kwargs"]).eval()
    assert m2.arch == m1.arch and m2.arch_kwargs == m1.arch_kwargs
    assert m2.feature_layers == m1.feature_layers
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert list(sd1) == list(sd2)
    assert all(sd1[key].shape == sd2[key].shape for key in sd1)
    m2.load_state_dict(sd1)
    x = torch.randn(2, c, s, s)
    with torch.no_grad():
        torch.testing.assert_close(m2(x), m1(x))
    cfg = m1.config()
    m3 = build_model(cfg["name"], cfg["num_classes"], cfg["in_channels"], cfg["image_size"], **cfg["kwargs"])
    assert [v.shape for v in m3.state_dict().values()] == [v.shape for v in sd1.values()]


def test_dropout_kwarg_is_used():
    torch.manual_seed(0)
    model = build_model("vgg4", dropout=0.5).train()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(model(x), model(x))  # different dropout masks
    model.eval()
    torch.testing.assert_close(model(x), model(x))


def test_imagenet_resnet_matches_torchvision_and_vgg9_depths_at_64px():
    """The Jacobian paper's Table 4 pairs (ResNet-34 teacher, VGG-9 student): at 64 px the teacher's four
    stages have the spatial sizes of VGG-9's pool2..pool5. ResNet-18 for 1,000 classes has torchvision's
    published 11,689,512 parameters."""
    from kdlab.models import build_model, feature_shapes

    assert sum(p.numel() for p in build_model("resnet18_imagenet", 1000, 3, 224).parameters()) == 11_689_512
    t = feature_shapes(build_model("resnet34_imagenet", 5, 1, 64), ["layer1", "layer2", "layer3", "layer4"])
    s = feature_shapes(build_model("vgg9", 5, 1, 64, width=0.25), ["pool2", "pool3", "pool4", "pool5"])
    assert [v[1:] for v in t.values()] == [v[1:] for v in s.values()] == [(16, 16), (8, 8), (4, 4), (2, 2)]
