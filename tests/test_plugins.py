"""Plugins (kdlab.plugins): a user package in a temporary directory registers a model and a term; YAML
(``imports:``), the CLI (``--import``) and the Python API all run it, to bit-identical weights."""
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import kdlab
from conftest import small_config
from kdlab.config import ConfigError
from kdlab.plugins import PluginImportError, import_plugin
from kdlab.runner import load_run_config, train


@pytest.fixture(autouse=True)
def restore_registries():
    """A plugin registers into kdlab's global registries: each test leaves them (and the imported user
    modules) as it found them, so no user entry leaks into later tests (e.g. the listing of every term)."""
    import gc
    import sys

    from kdlab.registry import Registry

    registries = [r for r in gc.get_objects() if isinstance(r, Registry)]
    saved = [dict(r._entries) for r in registries]
    modules = set(sys.modules)
    yield
    for r, entries in zip(registries, saved):
        r._entries.clear()
        r._entries.update(entries)
    for name in set(sys.modules) - modules:
        if not name.startswith(("kdlab", "torch", "timm", "torchvision")):
            del sys.modules[name]

MODELS_PY = '''
"""A user's own classifier (not a kdlab Classifier) and term."""
import torch
from torch import nn

import kdlab
from kdlab.terms import Term


@kdlab.register_model("user_mlp")
class UserMLP(nn.Module):
    """Two-layer MLP of the user's."""

    def __init__(self, num_classes, in_channels, image_size, hidden=24):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size ** 2, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.head(self.body(x))


@kdlab.register_term("user_logit_l2")
class LogitL2(Term):
    """Mean squared difference of student and teacher logits."""

    requires = frozenset({"teacher", "logits"})

    def forward(self, s, t, batch):
        return ((s.out - t.out.detach()) ** 2).mean()
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """The user package ``userpkg`` (on sys.path for the module) and a teacher run."""
    root = tmp_path_factory.mktemp("plugin")
    (root / "userpkg").mkdir()
    (root / "userpkg" / "__init__.py").write_text("")
    (root / "userpkg" / "parts.py").write_text(textwrap.dedent(MODELS_PY))
    import sys

    sys.path.insert(0, str(root))
    try:
        teacher = train(load_run_config([small_config(root, name="teacher", trainer={"epochs": 1})]))
        yield root, teacher
    finally:
        sys.path.remove(str(root))


def student_config(root: Path, teacher: Path, name: str) -> dict:
    return small_config(root, name=name, method="distill", teacher={"checkpoint": str(teacher)},
                        model={"name": "user_mlp", "kwargs": {"hidden": 24}}, trainer={"epochs": 1},
                        objective={"student": {"ce": {"weight": 1.0}, "user_logit_l2": {"weight": 0.5}}})


def test_yaml_cli_and_api_give_the_same_weights(plugin, tmp_path):
    from kdlab.cli import main

    root, teacher = plugin
    cfg = student_config(root, teacher, "yaml")
    cfg["out_dir"] = str(tmp_path)
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({**cfg, "imports": ["userpkg.parts"]}))
    assert main(["distill", str(tmp_path / "run.yaml")]) == 0
    cfg2 = dict(cfg, name="flag")
    (tmp_path / "flag.yaml").write_text(yaml.safe_dump(cfg2))
    assert main(["distill", str(tmp_path / "flag.yaml"), "--import", "userpkg.parts"]) == 0
    api = dict(cfg, name="api")
    out = api.pop("out_dir")
    run = kdlab.distill(teacher=api.pop("teacher")["checkpoint"], student=api.pop("model")["name"],
                        train=api["data"].pop("name"), objective=api.pop("objective"), method=api.pop("method"),
                        out=Path(out) / api.pop("name"), imports=["userpkg.parts"], model={"kwargs": {"hidden": 24}},
                        **api)
    states = [load_file(str(tmp_path / n / "student.safetensors")) for n in ("yaml", "flag", "api")]
    for key, ref in states[0].items():
        assert torch.equal(ref, states[1][key]) and torch.equal(ref, states[2][key]), key
    # the same resolved config, the plugin recorded with its file's hash
    texts = [(tmp_path / n / "config.yaml").read_text().replace(f"name: {n}\n", "") for n in ("yaml", "flag", "api")]
    assert texts[0] == texts[1] == texts[2]
    recorded = yaml.safe_load(texts[0])["imports"]
    parts = root / "userpkg" / "parts.py"
    assert recorded == [{"module": "userpkg.parts", "file": str(parts.resolve()),
                         "sha256": __import__("hashlib").sha256(parts.read_bytes()).hexdigest()}]
    # the term was in the loss: logged, and the student is the user's class
    assert "train/user_logit_l2" in (tmp_path / "api" / "metrics.jsonl").read_text()
    assert type(run.student).__name__ == "UserMLP"


def test_a_py_file_plugin_and_its_recorded_hash(tmp_path):
    plug = tmp_path / "my_terms.py"
    plug.write_text("X = 1\n")
    rec = import_plugin(str(plug))
    assert rec["sha256"] == __import__("hashlib").sha256(b"X = 1\n").hexdigest()
    assert import_plugin(rec) == rec  # a record from config.yaml imports again
    with pytest.raises(PluginImportError, match="changed since that run"):
        import_plugin({**rec, "sha256": "0" * 64})


def test_a_failing_import_shows_the_users_traceback(tmp_path):
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("def f():\n    raise RuntimeError('user bug here')\n\nf()\n")
    with pytest.raises(PluginImportError) as info:
        load_run_config([{"method": "teacher", "imports": [str(bad)]}])
    text = str(info.value)
    first, rest = text.split("\n", 1)
    assert "broken_plugin.py" in first and "RuntimeError" in first
    assert "Traceback" in rest and "user bug here" in rest and "line 2, in f" in rest


@pytest.mark.parametrize("entry, words", [("no_such_pkg_xyz.models", "no module named 'no_such_pkg_xyz.models'"),
                                          ("./missing_file.py", "file './missing_file.py' does not exist")])
def test_a_missing_import_is_named(entry, words):
    with pytest.raises(ConfigError, match=words.replace(".", r"\.").replace("(", r"\(")):
        load_run_config([{"method": "teacher"}], [f"imports=[{entry}]"])


def test_registering_an_existing_name_is_refused_unless_explicit():
    from kdlab.models import MODELS

    with pytest.raises(ValueError, match="'mlp' is registered twice.*replace=True"):
        kdlab.register_model("mlp")(lambda num_classes: torch.nn.Linear(1, num_classes))
    with pytest.raises(ValueError, match="registered twice"):
        kdlab.register_term("kd")(type("KD2", (__import__("kdlab.terms", fromlist=["Term"]).Term,), {}))
    with pytest.raises(TypeError, match="not a subclass of kdlab.terms.Term"):
        kdlab.register_term("fresh_name_1")(object)
    kdlab.register_model("user_replace_me")(lambda num_classes: torch.nn.Linear(1, num_classes))
    kdlab.register_model("user_replace_me", replace=True)(lambda num_classes: torch.nn.Linear(2, num_classes))
    assert MODELS.get("user_replace_me")(num_classes=3).weight.shape == (3, 2)


def test_register_dataset_from_a_user_loader(tmp_path):
    """A user data set registered by decorator runs like a named one: labels and images come back as given."""
    g = torch.Generator().manual_seed(0)
    splits = {s: (torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g), torch.arange(n) % 3)
              for s, n in (("train", 60), ("test", 30))}

    @kdlab.register_dataset("user_noise8", num_classes=3, in_channels=1, image_size=8, mean=[0.5], std=[0.29])
    def load(split, root, download):
        return splits[split]

    from kdlab.data import build_datasets

    d = build_datasets("user_noise8", val_size=0)
    x, y = d.test[4][:2]
    assert int(y) == 4 % 3
    assert torch.allclose(x, (splits["test"][0][4].float() / 255 - 0.5) / 0.29)


def test_entry_point_plugins_load_once_and_register(tmp_path, monkeypatch):
    """An installed package's ``kdlab.plugins`` entry point is loaded before a config resolves; its term is known."""
    import importlib.metadata as md
    import sys

    import lightning_fabric  # noqa: F401  (imports fsspec, which reads entry points, before they are faked)

    import kdlab.plugins as plugins

    (tmp_path / "ep_plugin_pkg.py").write_text(
        "import kdlab\nfrom kdlab.terms import Term\n\n@kdlab.register_term('user_ep_zero')\n"
        "class Zero(Term):\n    roles = frozenset({'student', 'teacher'})\n\n    def forward(self, s, t, batch):\n        return s.out.sum() * 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = md.EntryPoint(name="ep_plugin", value="ep_plugin_pkg", group=plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(md, "entry_points", lambda **kw: [ep] if kw.get("group") == plugins.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(plugins, "_ENTRY_POINTS", None)
    cfg = load_run_config([{"method": "teacher", "objective": {"teacher": {"user_ep_zero": {"weight": 1.0}}}}])
    assert "user_ep_zero" in cfg.objective.teacher and "ep_plugin_pkg" in sys.modules
    assert plugins.load_entry_points() == [{"entry_point": "ep_plugin", "module": "ep_plugin_pkg", "version": ""}]
    run = train(load_run_config([small_config(tmp_path, name="ep", trainer={"epochs": 1},
                                              data={"n_per_class": 5, "val_size": 0, "max_test": 50})]))
    import json

    assert json.loads((run / "summary.json").read_text())["plugins"] == plugins.load_entry_points()


def test_a_relative_py_import_is_read_beside_its_yaml_file(tmp_path, monkeypatch):
    (tmp_path / "cfgs").mkdir()
    (tmp_path / "cfgs" / "plug_rel.py").write_text("Y = 2\n")
    (tmp_path / "cfgs" / "run.yaml").write_text("method: teacher\nimports: [./plug_rel.py]\n")
    monkeypatch.chdir(tmp_path)  # not the YAML's folder
    cfg = load_run_config([tmp_path / "cfgs" / "run.yaml"])
    assert [dict(r)["file"] for r in cfg.imports] == [str((tmp_path / "cfgs" / "plug_rel.py").resolve())]
