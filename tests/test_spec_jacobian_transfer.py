"""The Jacobian paper's transfer tables converted to specs keep the Python grid they replaced: every
cell's resolved config, at both scales, equals the one the former ``kdlab.experiments.jacobian_transfer``
built (up to the run's name, label and where the teacher is), and so does the teacher's. The former
module's scales and rows are transcribed below as data."""
from __future__ import annotations

import json

import pytest

from kdlab.compare import load_spec
from kdlab.compare.plan import plan_compare
from kdlab.config import to_yaml
from kdlab.experiments import grid
from kdlab.experiments.specs import SPEC_DIR

#: the former _common(scale) and SCALE entries of the transfer tables
OLD_COMMON = {"small": ["data.val_size=500", "data.max_test=2000", "data.batch_size=64", "eval.latency=false",
                        "trainer.progress=false", "trainer.tensorboard=false", "optim.scheduler=cosine",
                        "optim.milestones=[]"],
              "full": ["eval.latency=false", "trainer.progress=false"]}
OLD_SOURCE = {"small": ["data.n_per_class=1000", "trainer.epochs=3"], "full": ["trainer.epochs=30"]}
OLD_WIDTH = {"small": ["model.kwargs.width=0.25"], "full": []}
OLD_EPOCHS = {"small": 20, "full": 75}
#: the former T3_ROWS["lwf_at_jac"]: every weight explicit
OLD_LWF_AT_JAC = ["objective.student.ce.weight=10.0", "objective.student.logits.weight=10.0",
                  "objective.student.jacobian.weight=0.0", "objective.student.attention.weight=10.0",
                  "objective.student.attention_jacobian.weight=10.0", "players.init_from_teacher=false"]


def _old_student(scale, tmp_path, teacher, cell, n, extra):
    """The former _transfer_run's overrides of the jacobian_lwf recipe (``extra``: the row's loss items)."""
    return grid.resolve([grid.recipe("jacobian_lwf")], [
        f"out_dir={tmp_path}", *OLD_COMMON[scale], *OLD_WIDTH[scale], f"teacher.checkpoint={teacher}",
        "data.classes=[5,6,7,8,9]", "data.batch_size=8", f"data.n_per_class={n}", f"trainer.epochs={OLD_EPOCHS[scale]}",
        f"seed={cell.seed}", f"data.subset_seed={cell.seed}", f"name={cell.cfg.name}", f"label={json.dumps(cell.cfg.label)}",
        "objective.student.attention.layers=[[pool1,layer2],[pool2,layer3]]",
        "objective.student.attention_jacobian.layers=[[pool1,layer2]]",
        *(["optim.scheduler=multistep", "optim.milestones=[40,60]"] if scale == "full" else []), *extra])


@pytest.mark.parametrize("scale", ["small", "full"])
def test_jacobian_table5_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    plan = plan_compare(load_spec(SPEC_DIR / "jacobian-table5.yaml", scale=scale, seeds="0,3"), tmp_path)
    old_teacher = grid.resolve([grid.recipe("jacobian_lwf_teacher")], [
        f"out_dir={tmp_path}", *OLD_COMMON[scale], *OLD_SOURCE[scale], "data.classes=[0,1,2,3,4]",
        "model.name=resnet20", f"name={plan.teacher.cfg.name}"])
    assert to_yaml(plan.teacher.cfg) == to_yaml(old_teacher)
    pools = {"full": 1, "s3": 3, "s5": 5, "s7": 7, "none": 0}  # the former T5_POOLS per window
    assert len(plan.cells) == 5 * 2 and [c.row.slug for c in plan.cells[::2]] == list(pools)
    for cell in plan.cells:
        old = _old_student(scale, tmp_path, plan.teacher_path, cell, 10,
                           [*OLD_LWF_AT_JAC, f"objective.student.attention_jacobian.pool={pools[cell.row.slug]}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name


def test_jacobian_table5_declares_its_claims():
    """s/5 beats no pooling and the full window (primary, the extremes of the paper's Table 5); s/5 vs
    s/3 and s/7 secondary; 10 seeds at small scale (a row costs well under a minute), 5 at full."""
    spec = load_spec(SPEC_DIR / "jacobian-table5.yaml", scale="small", require_primary=True)
    assert sorted((c.a, c.b, c.metric, c.direction) for c in spec.comparisons if c.kind == "primary") == [
        ("s5", "full", "test_acc_best", "greater"), ("s5", "none", "test_acc_best", "greater")]
    assert sorted((c.a, c.b) for c in spec.comparisons if c.kind == "secondary") == [("s5", "s3"), ("s5", "s7")]
    assert len(spec.seeds) == 10 and len(load_spec(SPEC_DIR / "jacobian-table5.yaml", scale="full").seeds) == 5


@pytest.mark.parametrize("scale", ["small", "full"])
def test_jacobian_table4_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    """The former table4 grid, with the one change the spec states: 40 epochs per row instead of 60 at
    small scale (5 seeds within 90 minutes on 2 cores)."""
    plan = plan_compare(load_spec(SPEC_DIR / "jacobian-table4.yaml", scale=scale, seeds="0,3"), tmp_path)
    old_teacher = grid.resolve([grid.recipe("jacobian_lwf_teacher")], [
        f"out_dir={tmp_path}", *OLD_COMMON[scale], *OLD_SOURCE[scale], "data.classes=[0,1,2,3,4]",
        "model.name=resnet34_imagenet", "data.image_size=64", f"name={plan.teacher.cfg.name}"])
    assert to_yaml(plan.teacher.cfg) == to_yaml(old_teacher)
    depths = [("pool2", "layer1"), ("pool3", "layer2"), ("pool4", "layer3"), ("pool5", "layer4")]  # former T4_DEPTHS
    assert len(plan.cells) == 4 * 2 and [c.row.slug for c in plan.cells[::2]] == [f"{t}-{s}" for s, t in depths]
    epochs = {"small": 40, "full": 75}[scale]  # the former t4_epochs: 60 (small), 75 (full)
    for cell in plan.cells:
        s_feat, t_feat = depths[[f"{t}-{s}" for s, t in depths].index(cell.row.slug)]
        old = _old_student(scale, tmp_path, plan.teacher_path, cell, 10, [
            *OLD_LWF_AT_JAC, "objective.student.attention.layers=[[pool2,layer1],[pool3,layer2],[pool4,layer3],[pool5,layer4]]",
            f"objective.student.attention_jacobian.layers=[[{s_feat},{t_feat}]]", "data.image_size=64",
            f"trainer.epochs={epochs}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name


def test_jacobian_table4_declares_its_claims():
    """The shallowest pair beats the two deepest (primary); the shallowest vs the second and each pair vs
    the next deeper one secondary; 5 seeds."""
    spec = load_spec(SPEC_DIR / "jacobian-table4.yaml", scale="small", require_primary=True)
    assert sorted((c.a, c.b) for c in spec.comparisons if c.kind == "primary") == [
        ("layer1-pool2", "layer3-pool4"), ("layer1-pool2", "layer4-pool5")]
    assert len([c for c in spec.comparisons if c.kind == "secondary"]) == 3 and len(spec.seeds) == 5
    assert all(c.direction == "greater" and c.metric == "test_acc_best" for c in spec.comparisons)
