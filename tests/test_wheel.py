"""The built wheel works on its own: grammar and templates travel inside the package.

Builds a wheel from this checkout, installs it (no dependencies) into a fresh virtual
environment, and runs that environment's `mncompile` from a directory outside the repository.
The dependencies come from the environment running the tests: its site-packages folders are
listed in a .pth file of the new one. (A venv made with --system-site-packages would see the
base interpreter's packages instead, which lack the dependencies when the tests run in a venv.)
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(cmd: list[str], cwd: Path, timeout: int = 180) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv, the wheel) once for the module."""
    base = tmp_path_factory.mktemp("wheel")
    dist = base / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(dist), str(ROOT)]
    local_backend = importlib.util.find_spec("hatchling") is not None
    if local_backend:
        cmd.insert(5, "--no-build-isolation")  # offline and fast; else pip fetches hatchling
    build = _run(cmd, cwd=base)
    if build.returncode != 0 and not local_backend:
        pytest.skip("hatchling is not installed here and pip could not fetch it to build the wheel:\n"
                    + build.stderr[-2000:])
    assert build.returncode == 0, build.stdout + build.stderr
    wheels = sorted(dist.glob("mncompile-*.whl"))
    assert len(wheels) == 1, wheels

    venv = base / "venv"
    # --without-pip: the outer pip is visible through the .pth file below and installs here
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=base)
    assert made.returncode == 0, made.stderr
    py = venv / "bin" / "python"
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=base)
    assert site.returncode == 0, site.stderr
    # the outer environment's package folders, not its other sys.path entries (such as an
    # editable install's source folder): plain paths, so its own .pth files are not run here
    outer = [p for p in sys.path
             if p and Path(p).is_dir() and Path(p).name in ("site-packages", "dist-packages")]
    (Path(site.stdout.strip()) / "outer-environment.pth").write_text("\n".join(outer) + "\n")
    # --ignore-installed: the outer environment holds an editable mncompile of the same version
    inst = _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed",
                 str(wheels[0])], cwd=base)
    assert inst.returncode == 0, inst.stdout + inst.stderr
    return venv, wheels[0]


def test_wheel_carries_grammar_and_templates(installed: tuple[Path, Path]) -> None:
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mncompile/grammar/mnet.lark" in names
    assert "mncompile/__init__.py" in names and "mncompile/cli.py" in names
    assert any(n.startswith("mncompile/templates/") for n in names)
    assert not any(n.startswith(("tests/", "examples/")) for n in names)


def test_installed_resources_live_in_the_venv(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    probe = (
        "import json, sysconfig, mncompile, mncompile.resources as r;"
        "print(json.dumps({'pkg': mncompile.__file__, 'grammar': str(r.grammar_path()),"
        " 'templates': str(r.templates_dir()), 'purelib': sysconfig.get_paths()['purelib']}))"
    )
    proc = _run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    site = Path(info["purelib"]).resolve()
    assert site.is_relative_to(venv.resolve())
    for key in ("pkg", "grammar", "templates"):
        path = Path(info[key]).resolve()
        assert path.is_relative_to(site), (key, path)
        assert not path.is_relative_to(ROOT), (key, path)
    assert Path(info["grammar"]).is_file() and Path(info["templates"]).is_dir()


def test_installed_cli_checks_a_spec(installed: tuple[Path, Path], tmp_path: Path) -> None:
    venv, _ = installed
    shutil.copy(ROOT / "examples" / "v5.mnet", tmp_path / "v5.mnet")
    script = venv / "bin" / "mncompile"
    ok = _run([str(script), "check", "v5.mnet"], cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "v5.mnet: ensemble 'v5' is valid: 5 nets" in ok.stdout

    (tmp_path / "bad.mnet").write_text("ensemble e {\n  input 40\n  classes 10\n  net a mlp { dense 0 }\n}\n")
    bad = _run([str(script), "check", "bad.mnet"], cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.startswith("bad.mnet:4:21: error: ") and "Traceback" not in bad.stderr
