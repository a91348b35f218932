"""mkdocs hook of the kdlab docs: fills the generated parts of pages at build time.

- ``<!-- kdlab:results <experiment> -->``: the experiment's tables from ``results/<experiment>/<scale>/results.json``
  (:func:`kdlab.report.pages.render_page`), or the command that makes them;
- ``<!-- kdlab:config-reference -->``: the config reference from the config dataclasses
  (:func:`kdlab.reference.config_reference`);
- ``<!-- kdlab:results-overview -->``: one line per experiment and committed scale, with its verdicts
  (:func:`kdlab.report.overview.render_overview`).

Nothing generated is committed. kdlab is imported from ``src/`` beside this file.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

CONFIG_MARKER = "<!-- kdlab:config-reference -->"


def on_page_markdown(markdown, page, config, files):
    """Replace the page's markers by what they stand for."""
    if CONFIG_MARKER in markdown:
        from kdlab.reference import config_reference

        markdown = markdown.replace(CONFIG_MARKER, config_reference())
    if "kdlab:results" in markdown:
        from kdlab.report.pages import render_page

        markdown = render_page(markdown, ROOT / "results")
    if "kdlab:results-overview" in markdown:
        markdown = markdown.replace("<!-- kdlab:results-overview -->", results_overview())
    return markdown


def results_overview() -> str:
    """The overview of every registered experiment, each linked to the paper page whose marker names it."""
    from kdlab.experiments import EXPERIMENTS
    from kdlab.report.overview import render_overview
    from kdlab.report.pages import MARKER

    pages = {exp: f"papers/{page.name}" for page in sorted((ROOT / "docs" / "papers").glob("*.md"))
             for exp in MARKER.findall(page.read_text())}
    return render_overview(ROOT / "results", EXPERIMENTS.describe(), pages)
