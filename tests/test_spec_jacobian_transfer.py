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


#: the former T3_ROWS (row -> logits, attention, attention_jacobian weights; init_from_teacher) and sizes
OLD_T3_ROWS = {"ce": (0.0, 0.0, 0.0, False), "oracle": (0.0, 0.0, 0.0, True), "lwf": (10.0, 0.0, 0.0, False),
               "lwf-jac": (10.0, 0.0, 10.0, False), "lwf-at": (10.0, 10.0, 0.0, False), "lwf-at-jac": (10.0, 10.0, 10.0, False)}
OLD_T3_SIZES = {"small": {"n5": 5, "n10": 10, "n50": 50},
                "full": {"n5": 5, "n10": 10, "n25": 25, "n50": 50, "full": "null"}}


@pytest.mark.parametrize("scale", ["small", "full"])
def test_jacobian_table3_spec_resolves_to_the_former_grid_configs(scale, tmp_path):
    """Both source networks (the ResNet-20 teacher, the Oracle's VGG-9: the spec's further teacher) and
    every row x column; the Oracle learns from (starts from) the VGG-9, every other row from the ResNet."""
    plan = plan_compare(load_spec(SPEC_DIR / "jacobian-table3.yaml", scale=scale, seeds="0,3"), tmp_path)
    base = [f"out_dir={tmp_path}", *OLD_COMMON[scale], *OLD_SOURCE[scale], "data.classes=[0,1,2,3,4]"]
    resnet, vgg = plan.teacher_cells
    assert to_yaml(resnet.cfg) == to_yaml(grid.resolve([grid.recipe("jacobian_lwf_teacher")], [
        *base, "model.name=resnet20", f"name={resnet.cfg.name}"]))
    assert to_yaml(vgg.cfg) == to_yaml(grid.resolve([grid.recipe("jacobian_lwf_teacher")], [
        *base, *OLD_WIDTH[scale], "model.name=vgg9", f"name={vgg.cfg.name}"]))
    sizes = OLD_T3_SIZES[scale]
    assert len(plan.cells) == len(OLD_T3_ROWS) * len(sizes) * 2
    checked = set()
    for cell in plan.cells:
        row, col = cell.row.slug.rsplit("-", 1)
        logits, at, at_jac, init = OLD_T3_ROWS[row]
        teacher = vgg.run_dir if row == "oracle" else resnet.run_dir
        old = _old_student(scale, tmp_path, teacher, cell, sizes[col], [
            "objective.student.ce.weight=10.0", f"objective.student.logits.weight={logits}",
            "objective.student.jacobian.weight=0.0", f"objective.student.attention.weight={at}",
            f"objective.student.attention_jacobian.weight={at_jac}", f"players.init_from_teacher={str(init).lower()}"])
        assert to_yaml(cell.cfg) == to_yaml(old), cell.cfg.name
        checked.add((row, col))
    assert len(checked) == len(OLD_T3_ROWS) * len(sizes)


def test_jacobian_table3_declares_its_claims():
    """Jacobians on top of LwF, and on top of LwF + attention, in every column (primary); LwF vs CE,
    attention on top of LwF, Oracle vs CE secondary; 5 seeds."""
    spec = load_spec(SPEC_DIR / "jacobian-table3.yaml", scale="small", require_primary=True)
    assert sorted((c.a, c.b) for c in spec.comparisons if c.kind == "primary") == sorted(
        (f"{a}-{col}", f"{b}-{col}") for a, b in (("lwf-jac", "lwf"), ("lwf-at-jac", "lwf-at"))
        for col in ("n5", "n10", "n50"))
    assert {(c.a.rsplit("-", 1)[0], c.b.rsplit("-", 1)[0]) for c in spec.comparisons if c.kind == "secondary"} == {
        ("lwf", "ce"), ("lwf-at", "lwf"), ("oracle", "ce")}
    assert len(spec.seeds) == 5


def test_further_teachers_are_checked_before_anything_trains(tmp_path):
    """A row's teacher must be under teachers:; teachers: needs the spec's teacher recipe; a further
    teacher's sets are resolved (a bad key is refused naming it)."""
    from kdlab.config import ConfigError

    base = {"name": "tt", "teacher": "demo_teacher", "methods": [{"label": "KD", "recipe": "demo_kd", "teacher": "other"}]}
    with pytest.raises(ConfigError, match=r"method row 'KD': teacher 'other' is not under 'teachers:'; accepted: none"):
        load_spec(base)
    with pytest.raises(ConfigError, match="further teachers start from the spec's 'teacher' recipe"):
        load_spec({**base, "teacher": None, "teachers": {"other": ["trainer.epochs=1"]}})
    with pytest.raises(ConfigError, match=r"teachers: name 'teacher'"):
        load_spec({**base, "teachers": {"teacher": ["trainer.epochs=1"]}})
    with pytest.raises(ConfigError, match=r"teachers\.other.*trainer\.epochz"):
        plan_compare(load_spec({**base, "teachers": {"other": ["trainer.epochz=1"]}}), tmp_path)
    plan = plan_compare(load_spec({**base, "methods": [*base["methods"], {"label": "CE", "recipe": "demo_ce"}],
                                   "teachers": {"other": ["trainer.epochs=2"]}}), tmp_path)
    assert [c.cfg.trainer.epochs for c in plan.teacher_cells][1] == 2
    assert [c.cfg.teacher.checkpoint for c in plan.cells[::3]] == [str(tmp_path / "tt-teacher-other"),
                                                                  str(tmp_path / "tt-teacher")]


@pytest.mark.parametrize("experiment", ["jacobian-table3", "jacobian-table4", "jacobian-table5"])
def test_transfer_rows_match_activations_by_the_mean_over_source_logits(experiment, tmp_path):
    """A wiring check (no training): every row that matches the teacher's outputs uses the squared error
    averaged over the source logits (``logits.mode: mse``, the ``jacobian_lwf`` recipe). With the sum over
    classes at weight 10 the students of these tables collapsed (dead pre-final features, target accuracy
    at chance); the recipe gives the numbers."""
    plan = plan_compare(load_spec(SPEC_DIR / f"{experiment}.yaml", scale="small", seeds="0,1"), tmp_path)
    matching = [c for c in plan.cells if c.cfg.objective.student.logits.weight > 0]
    assert matching and all(c.cfg.objective.student.logits.mode == "mse" for c in matching)
