"""README.md stays a five-minute read (issue 20): at most 250 lines, and every page it links exists."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_is_at_most_250_lines():
    assert len(README.splitlines()) <= 250


def test_every_relative_link_of_the_readme_exists_with_its_anchor():
    links = re.findall(r"\]\(([^)#\s]+)(?:#([\w-]+))?\)", README)
    local = [(p, a) for p, a in links if not p.startswith(("http://", "https://"))]
    assert {"docs/guide.md", "docs/errors.md", "docs/performance.md", "docs/gpu.md", "docs/distributed.md",
            "docs/hil_release.md", "docs/switching.md", "docs/design.md"} <= {p for p, _ in local}
    for path, anchor in local:
        target = ROOT / path
        assert target.is_file(), path
        if anchor:  # GitHub's anchor of a heading: lower case, spaces to '-', punctuation dropped
            heads = [re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                     for h in re.findall(r"^#+ (.*)$", target.read_text(), flags=re.M)]
            assert anchor in heads, (path, anchor)


def test_the_readme_keeps_the_two_commands_the_example_and_the_switch():
    assert 'pip install torch==2.13.0 && pip install -e ".[train]" && hil make-synthetic data/synth_sysu && ' \
           'hil train --config configs/demo_tiny.yaml' in README
    assert 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q' in README
    assert "hilcore.jaccard_distance(features" in README and "hilcore.dbscan(d" in README
    assert "from hilcore.compat import compute_jaccard_distance, DBSCAN, ClusterMemory" in README
