"""docs/study-file.md is generated from the study file's pydantic models: it must be what
docs/gen_study_file.py writes now (run that script after changing a model)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_study_file_page_is_current():
    spec = importlib.util.spec_from_file_location("gen_study_file", DOCS / "gen_study_file.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    page = gen.render()
    assert "| `max_concurrent` |" in page and "## `SlurmResources`" in page  # every nested model is there
    assert (DOCS / "study-file.md").read_text() == page, "docs/study-file.md is stale: run docs/gen_study_file.py"


# written on other branches (issues 20-23); links to them are checked once they exist


def test_readme_is_short_and_every_link_leads_somewhere():
    import re

    root = DOCS.parent
    assert len((root / "README.md").read_text().splitlines()) <= 200
    broken = []
    for page in [root / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            path = (page.parent / target).resolve()
            if not path.exists():
                broken.append(f"{page.relative_to(root)} -> {target}")
    assert broken == []
