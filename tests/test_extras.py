"""Packaging: `import hilcore` and the ops need only numpy, scipy and torch; the driver's and the benchmarks'
dependencies come with the `train` / `bench` extras, and a missing one is named in the error.

Each check runs in a fresh interpreter whose import system refuses the optional modules (a
``sys.meta_path`` finder raising ImportError for them), as on a machine without the extras.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = ("yaml", "PIL", "matplotlib", "tqdm", "psutil", "sklearn", "pydantic")

BLOCK = textwrap.dedent(f"""
    import sys
    BLOCKED = {OPTIONAL!r}

    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)", name=name)
            return None

    sys.meta_path.insert(0, _Block())
    for _m in [m for m in sys.modules if m.split(".")[0] in BLOCKED]:
        del sys.modules[_m]
""")


def run_blocked(code: str, timeout: float = 120):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", BLOCK + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_import_hilcore_and_the_ops_without_the_extras(tmp_path):
    feats = str(tmp_path / "f.npy")
    r = run_blocked(f"""
        import numpy as np, scipy.sparse as sp, torch
        import hilcore
        import hilcore.train  # importable too; only its readers and renderers need the extra

        g = torch.Generator().manual_seed(0)
        centres = torch.nn.functional.normalize(torch.randn(6, 24, generator=g), dim=1)
        x = torch.nn.functional.normalize(centres.repeat_interleave(9, 0) + 0.05 * torch.randn(54, 24, generator=g),
                                          dim=1)
        idx, sim = hilcore.knn(x, 5)
        want = torch.topk(x @ x.t(), 5, dim=1)
        assert torch.allclose(sim, want.values, atol=1e-5), (sim, want.values)
        assert (idx[:, 0] == torch.arange(54)).all()
        dist = hilcore.jaccard_distance(x, 8, 3, max_distance=0.6)
        assert isinstance(dist, sp.csr_matrix) and dist.shape == (54, 54)
        labels = np.asarray(hilcore.dbscan(dist, 0.6, 4))
        assert labels.shape == (54,)
        truth = np.repeat(np.arange(6), 9)
        # the 6 well separated groups come out as 6 clusters, each one group
        assert len(set(labels.tolist()) - {{-1}}) == 6
        for c in set(labels.tolist()) - {{-1}}:
            assert len(set(truth[labels == c].tolist())) == 1
        leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        assert not leaked, leaked

        # hil cluster with a progress display asked for, without tqdm: runs, no bar
        import contextlib, io
        from hilcore.cli import main
        from hilcore.synthetic import reid_features
        np.save({feats!r}, reid_features(10, 8, dim=32, seed=0)[0])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(["cluster", {feats!r}, "--progress", "on", "--k1", "8", "--k2", "3"]) == 0
        assert "clusters" in out.getvalue()
        print("ok")
    """)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stdout + r.stderr


def test_the_block_works():
    """The finder really hides the modules (else the test above could not fail)."""
    r = run_blocked("import yaml")
    assert r.returncode != 0 and "blocked by the test" in r.stderr


def test_cli_names_the_missing_extra(tmp_path):
    cases = [(["train", "--config", "configs/does-not-matter.yaml"], "train"),
             (["make-synthetic", str(tmp_path / "syn")], "train"),
             (["bench", "--quick", "--no-baseline", "--out", str(tmp_path / "b.json")], "bench")]
    r = run_blocked(f"""
        import contextlib, io, json
        from hilcore.cli import main
        out = []
        for argv, _ in {cases!r}:
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                rc = main(argv)
            out.append([rc, err.getvalue()])
        # hilcore.compat subclasses scikit-learn's estimator: the 'compat' extra
        from hilcore._extras import MissingExtra
        try:
            import hilcore.compat
        except MissingExtra as e:
            out.append(str(e))
        # the library's own message, outside the CLI
        from hilcore.train.config import load_config
        try:
            load_config(None)
        except MissingExtra as e:
            assert isinstance(e, ModuleNotFoundError) and e.name == "yaml"
            out.append(str(e))
        print(json.dumps(out))
    """)
    assert r.returncode == 0, r.stdout + r.stderr
    import json

    *cli, compat, lib = json.loads(r.stdout.strip().splitlines()[-1])
    assert compat == ("hilcore.compat needs the 'compat' extra (scikit-learn is not installed): "
                      "pip install 'hilcore[compat]'")
    assert lib == ("hilcore.train.config (YAML configs) needs the 'train' extra (pyyaml is not installed): "
                   "pip install 'hilcore[train]'")
    assert len(cli) == len(cases)
    for (argv, extra), (rc, err) in zip(cases, cli):
        assert rc == 2, (argv, err)
        line = err.strip().splitlines()[-1]
        assert line.startswith(f"hil: error: hil {argv[0]} needs the '{extra}' extra ("), line
        assert line.endswith(f"is not installed): pip install 'hilcore[{extra}]'"), line


def test_pyproject_dependencies():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(reqs):
        return {r.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower() for r in reqs}

    assert names(meta["dependencies"]) == {"numpy", "scipy", "torch"}
    extras = {k: names(v) for k, v in meta["optional-dependencies"].items()}
    assert {"pyyaml", "pillow", "matplotlib", "tqdm", "scikit-learn", "pydantic"} <= extras["train"]
    assert {"psutil"} <= extras["bench"]
    assert {"scikit-learn"} <= extras["compat"]
    assert extras["train"] | extras["bench"] | extras["compat"] | {"pytest"} <= extras["test"]


def test_readme_commands_install_their_extras_and_ci_runs_the_test_command():
    readme = (ROOT / "README.md").read_text()
    main_cmd = next(line for line in readme.splitlines() if "hil train --config" in line and "pip install" in line)
    test_cmd = next(line for line in readme.splitlines() if "python -m pytest" in line and "pip install" in line)
    assert 'pip install -e ".[train]"' in main_cmd
    assert 'pip install -e ".[test]"' in test_cmd
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci  # verbatim
    cross = [i for i, line in enumerate(ci) if line.strip().startswith(".ci/cross_aarch64.sh")]
    assert cross and cross[0] < ci.index(test_cmd)
    assert "set +e" not in "\n".join(ci[:cross[0]])  # a cross-compile failure stops CI (set -e)
