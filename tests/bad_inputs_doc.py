"""Regenerate the catalogue table of ``docs/bad_inputs.md`` from the cases of ``test_bad_inputs.py`` and
``bad_input_cases.py``: each case is run as the test runs it and its message (paths shortened to ``F/``,
``cfg.yaml``, ``gan.yaml``, ``out``) replaces the row of the same input, or is appended as a new row.
Rows the cases do not produce (written by hand for other tests) are kept.

    OMP_NUM_THREADS=1 PYTHONPATH=src:tests python tests/bad_inputs_doc.py
"""
from __future__ import annotations

import contextlib
import io
import re
import sys
import tempfile
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
WIDTH = 300  # characters of a message shown in the table


class _Factory:
    def __init__(self, root: Path) -> None:
        self.root, self.n = root, 0

    def mktemp(self, name: str) -> Path:
        self.n += 1
        d = self.root / f"{name}{self.n}"
        d.mkdir()
        return d


def _unwrap(fixture):
    """The plain function of a pytest fixture (pytest >= 8.4 wraps it; older ones mark it)."""
    return getattr(fixture, "_get_wrapped_function", lambda: getattr(fixture, "__pytest_wrapped__").obj)()


def shown_input(argv: str) -> str:
    return argv.replace("{cfg}", "cfg.yaml").replace("{gan}", "gan.yaml").replace("{f}/", "F/").replace("{out}", "out")


def run_case(argv: str, files: Path, gen_teacher: Path, tmp: Path, special: str) -> str:
    """The message ``kdlab.cli.main`` prints for one case, its paths shortened."""
    import test_bad_inputs as t
    from kdlab.cli import main

    out = tmp / "out"
    out.mkdir()
    values = {"cfg": t.cfg_file(tmp), "gan": t.gan_cfg_file(tmp, gen_teacher), "f": files, "out": out}
    if "truncated last.ckpt" in special or "same run again" in special:
        run = tmp / "runs" / "t"
        (run / "checkpoints").mkdir(parents=True)
        (run / "config.yaml").write_text("name: t\n")
        good = (files / "good.ckpt").read_bytes()
        (run / "checkpoints" / "last.ckpt").write_bytes(good[: len(good) // 2])
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([a.format(**values) for a in argv.split(" ")])
    assert code == 2, (argv, err.getvalue())
    text = re.sub(r"^Seed set to \d+ ", "", " ".join(err.getvalue().split()))  # Lightning's line, not kdlab's
    for path, short in ((str(files) + "/", "F/"), (str(files), "F"), (str(values["cfg"]), "cfg.yaml"),
                        (str(values["gan"]), "gan.yaml"), (str(out), "out"), (str(tmp), "."), (str(gen_teacher), "F/tg.safetensors")):
        text = text.replace(path, short)
    text = text if len(text) <= WIDTH else text[:WIDTH] + "..."
    return text.replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")  # brackets: no cross-reference


def main() -> None:
    import test_bad_inputs as t
    from bad_input_cases import SWEEP_CASES

    with tempfile.TemporaryDirectory() as root:
        factory = _Factory(Path(root))
        files = _unwrap(t.files)(factory)
        from conftest import gen_teacher

        teacher = _unwrap(gen_teacher)(factory)
        rows = []
        for p in t.CASES + SWEEP_CASES:
            if any(m.name in ("xfail", "skipif") and (m.name == "xfail" or m.args[0]) for m in p.marks):
                continue
            argv = p.values[0]
            msg = run_case(argv, files, teacher, factory.mktemp("case"), p.id)
            rows.append((p.id.split(":")[0], shown_input(argv), p.id, msg))
    lines = DOC.read_text().splitlines()
    table = [i for i, line in enumerate(lines) if line.startswith("| ") and not line.startswith("| area")]
    done = set()
    for i in table:
        m = re.match(r"\| (\S+) \| `(.*?)`( \(.*?\))? \| ", lines[i])
        if not m or m.group(3):
            continue  # a hand-written row (a setup named in parentheses)
        for area, inp, pid, msg in rows:
            if inp == m.group(2) and pid not in done and not pid.startswith("rundir: --resume"):
                lines[i] = f"| {m.group(1)} | `{inp}` | {msg} |"
                done.add(pid)
                break
    new = [f"| {area} | `{inp}` | {msg} |" for area, inp, pid, msg in rows if pid not in done
           and not pid.startswith(("rundir: --resume", "rundir: the same run"))]
    last = table[-1]
    lines[last + 1:last + 1] = new
    DOC.write_text("\n".join(lines) + "\n")
    print(f"{len(done)} rows updated, {len(new)} added; {len(rows)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
