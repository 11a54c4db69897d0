"""The summary of a device check (benchmarks/device_check.sh): at most 60 lines, written to summary.txt.

    python3 benchmarks/device_summary.py WORKDIR MODE WALL_S ARCHIVE [ONE_LINE]

Reads WORKDIR/steps.tsv (step, status, seconds), the junit XML of the test steps,
the sanitizer logs and the benchmark JSONs; writes WORKDIR/summary.txt. Only the
standard library: it must run on a machine where nothing else works.
"""
from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

MAX_LINES = 60
MAX_FAILURES = 15


def _first_line(text: str | None) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()[:160]
    return ""


def failures(xml_path: Path) -> tuple[dict, list[str]]:
    """(counts, ["test id: first error line", ...]) of one junit XML file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError):
        return {}, [f"{xml_path.name}: unreadable (the step was cut short?)"]
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    out = []
    for suite in root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0) or 0)
    for case in root.iter("testcase"):
        for kind in ("failure", "error"):
            el = case.find(kind)
            if el is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}".split(".")[-1]
                out.append(f"{name}: {_first_line(el.get('message')) or _first_line(el.text)}")
    return counts, out


def _device(env: Path) -> str:
    text = env.read_text(errors="replace") if env.exists() else ""
    dev = re.search(r"^device (.+)$", text, re.M)
    vers = [m for m in re.findall(r"^(torch|triton) (\S+)$", text, re.M)]
    cuda = re.search(r"^torch cuda (\S+)", text, re.M)
    drv = re.search(r"Driver Version:\s*(\S+)", text)
    parts = [dev[1] if dev else "no CUDA device"] + [f"{a} {b}" for a, b in vers]
    if cuda:
        parts.append(f"CUDA {cuda[1]}")
    if drv:
        parts.append(f"driver {drv[1]}")
    return ", ".join(parts)


def headline(work: Path) -> list[str]:
    out = []
    knn = work / "knn_cuda.json"
    if knn.exists():
        try:
            doc = json.loads(knn.read_text())
            for row in doc.get("rows", []):
                cols = ", ".join(f"{name} {1e3 * c['median_s']:.2f} ms" for name, c in row["columns"].items()
                                 if "median_s" in c)
                out.append(f"knn N={row['n']} D={row['dim']} k={row['k']}: {cols}")
        except (ValueError, KeyError, TypeError) as e:
            out.append(f"knn_cuda.json unreadable: {e}")
    scale = work / "scale_cuda.json"
    if scale.exists():
        try:
            doc = json.loads(scale.read_text())
            for row in doc.get("rows", []):
                st = row.get("stages_s", {})
                out.append(f"scale N={row.get('n')}: total {row.get('total_s')} s, knn {st.get('knn')} s, "
                           f"jaccard {st.get('jaccard')} s, dbscan {st.get('dbscan')} s ({row.get('status')})")
        except (ValueError, KeyError, TypeError) as e:
            out.append(f"scale_cuda.json unreadable: {e}")
    return out


def summary(work: Path, mode: str, wall: str, archive: str, line: str = "") -> list[str]:
    """The summary lines; a run stopped early (``line``: why) gets that one line, and the build log's last
    lines when the build is what stopped it."""
    if line:
        out = [f"device_check {mode}: {line} ({wall} s; archive {archive})"]
        build = work / "build.log"
        if build.exists():
            out += ["build.log (last lines):"] + [f"  {t[:160]}" for t in
                                                 build.read_text(errors="replace").splitlines()[-12:]]
        return out
    steps = []
    st = work / "steps.tsv"
    if st.exists():
        for row in st.read_text().splitlines():
            name, status, secs = (row.split("\t") + ["", ""])[:3]
            steps.append((name, status, secs))
    bad = [s for s in steps if s[0] != "env" and s[1] != "0"]
    verdict = "all steps passed" if not bad else f"{len(bad)} step(s) not passed"
    lines = [f"device_check {mode}: {verdict} ({wall} s)", f"device: {_device(work / 'env.txt')}", "steps:"]
    lines += [f"  {name:18} {status:22} {secs:>4} s" for name, status, secs in steps]
    fails = []
    for xml in sorted(work.glob("tests*.xml")):
        counts, f = failures(xml)
        if counts:
            lines.append(f"{xml.stem}: {counts['tests']} tests, {counts['failures']} failed, "
                         f"{counts['errors']} errors, {counts['skipped']} skipped")
        fails += f
    if fails:
        lines.append("failing tests (first error line):")
        lines += [f"  {f}" for f in fails[:MAX_FAILURES]]
        if len(fails) > MAX_FAILURES:
            lines.append(f"  ... and {len(fails) - MAX_FAILURES} more (junit XML in the archive)")
    for log in sorted(work.glob("sanitizer_*.log")) + sorted(work.glob("smoke.log")):
        text = log.read_text(errors="replace")
        m = re.findall(r"ERROR SUMMARY: .*", text)
        last = m[-1] if m else _first_line("\n".join(text.splitlines()[-1:]))
        lines.append(f"{log.stem}: {last}")
    lines += headline(work)
    lines.append(f"archive: {archive}")
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 2] + [f"... ({len(lines) - MAX_LINES + 1} lines cut; summary.txt has all)",
                                         lines[-1]]
    return lines


def main(argv=None) -> int:
    a = sys.argv[1:] if argv is None else argv
    work, mode, wall, archive = Path(a[0]), a[1], a[2], a[3]
    line = a[4] if len(a) > 4 else ""
    lines = summary(work, mode, wall, archive, line)
    (work / "summary.txt").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
