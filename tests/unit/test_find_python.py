"""Which Python 3.11 ``make install`` builds ``.venv`` with (``scripts/find-python``, ranking each candidate with
``scripts/python_build.py``): an optimised build where the machine has one, since every PenPay process is Python.

The chooser is run against stub interpreters (shell scripts answering as ``python_build.py`` would), so what it
picks does not depend on the Pythons this machine happens to have."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from bench.report import faster_python, python_build

ROOT = Path(__file__).resolve().parents[2]
FIND_PYTHON = ROOT / "scripts" / "find-python"
PYTHON_BUILD = ROOT / "scripts" / "python_build.py"


def _python_build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("python_build", PYTHON_BUILD)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_an_enable_optimizations_build_ranks_first_then_the_distributions_then_any_other() -> None:
    build = _python_build()
    pgo = build.describe("/usr/local/bin/python3.11", "'--enable-optimizations' '--with-lto' '--enable-shared'")
    debian = build.describe("/usr/bin/python3.11", "'--enable-shared' '--prefix=/usr' '--with-computed-gotos'")
    pyenv = build.describe("/root/.pyenv/versions/3.11.7/bin/python3.11", "'--prefix=/root/.pyenv' '--enable-shared'")
    assert pgo == (2, "built with PGO and LTO (--enable-optimizations)")
    assert debian[0] == 1
    assert "distribution" in debian[1]
    assert pyenv[0] == 0
    assert "plain build" in pyenv[1]
    # an --enable-optimizations build in /usr/bin is ranked by its flags, not its place
    assert build.describe("/usr/bin/python3.11", "'--enable-optimizations'")[0] == 2


def test_this_interpreter_describes_itself_in_one_tab_separated_line() -> None:
    done = subprocess.run([sys.executable, str(PYTHON_BUILD)], capture_output=True, text=True, check=True)
    rank, executable, version, build = done.stdout.rstrip("\n").split("\t")
    assert int(rank) in (0, 1, 2)
    assert Path(executable).is_absolute()
    assert executable == os.path.realpath(executable)
    assert version.startswith("3.11.")
    assert build


class Stubs:
    """Directories of stub ``python3.11`` executables, and the few tools the chooser runs (nothing else on PATH)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.tools = root / "tools"
        self.tools.mkdir()
        for tool in ("cut", "dirname"):
            found = shutil.which(tool)
            assert found is not None
            (self.tools / tool).symlink_to(found)

    def python(self, directory: str, *, rank: int | None, version: str = "3.11.9") -> Path:
        """A ``python3.11`` in ``directory`` that answers like python_build.py (``rank`` None: not usable)."""
        folder = self.root / directory
        folder.mkdir(exist_ok=True)
        stub = folder / "python3.11"
        answer = "exit 1" if rank is None else f"printf '{rank}\\t{stub}\\t{version}\\tbuild {rank}\\n'"
        stub.write_text(f"#!/bin/sh\n{answer}\n")
        stub.chmod(0o755)
        return stub

    def choose(self, path: list[str], extra: list[str]) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.pathsep.join([*(str(self.root / d) for d in path), str(self.tools)]),
            "FIND_PYTHON_DIRS": " ".join(str(self.root / d) for d in extra),
        }
        return subprocess.run([str(FIND_PYTHON)], env=env, capture_output=True, text=True, check=False)


@pytest.fixture
def stubs(tmp_path: Path) -> Stubs:
    return Stubs(tmp_path)


def test_the_best_ranked_interpreter_wins_wherever_it_is(stubs: Stubs) -> None:
    stubs.python("pyenv", rank=0)
    distribution = stubs.python("usr-bin", rank=1)
    done = stubs.choose(path=["pyenv"], extra=["usr-bin"])
    assert done.returncode == 0
    assert done.stdout == f"{distribution}\n"
    assert done.stderr == f"python: {distribution}, 3.11.9, build 1\n"  # why, in one line


def test_among_equals_the_first_on_the_path_wins(stubs: Stubs) -> None:
    first = stubs.python("first", rank=2)
    stubs.python("second", rank=2)
    stubs.python("usr-bin", rank=1)
    assert stubs.choose(path=["first", "second"], extra=["usr-bin"]).stdout == f"{first}\n"


def test_an_interpreter_that_is_not_a_usable_3_11_is_passed_over(stubs: Stubs) -> None:
    stubs.python("broken", rank=None)  # another version, or no venv/ensurepip
    plain = stubs.python("plain", rank=0)
    assert stubs.choose(path=["broken", "plain"], extra=[]).stdout == f"{plain}\n"


def test_no_usable_interpreter_prints_nothing_and_fails(stubs: Stubs) -> None:
    stubs.python("broken", rank=None)
    done = stubs.choose(path=["broken", "missing"], extra=["nowhere"])
    assert done.returncode == 1
    assert done.stdout == ""


def _stub(path: Path, rank: int, executable: str, build: str) -> str:
    """An interpreter that answers ``python_build.py`` as a build of ``rank`` would."""
    path.write_text(f"#!/bin/sh\nprintf '{rank}\\t{executable}\\t3.11.9\\t{build}\\n'\n")
    path.chmod(0o755)
    return str(path)


def _fake_repository(root: Path, *, chosen_rank: int) -> Path:
    """A repository with the real ``scripts/venv-note``, whose ``scripts/find-python`` chooses a stub interpreter of
    ``chosen_rank``."""
    scripts = root / "repo" / "scripts"
    scripts.mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "venv-note", scripts / "venv-note")
    stub = _stub(root / "python3.11", chosen_rank, "/opt/fast/python3.11", f"build {chosen_rank}")
    chooser = scripts / "find-python"
    chooser.write_text(f"#!/bin/sh\necho {stub}\n")
    chooser.chmod(0o755)
    return root / "repo"


def test_make_bench_records_the_build_that_runs_it() -> None:
    build = python_build(ROOT)
    assert build["executable"] == os.path.realpath(sys.executable)
    assert build["version"].startswith("3.11.")
    assert build["rank"] in (0, 1, 2)


def test_make_install_and_make_bench_say_when_a_faster_build_would_now_be_chosen(tmp_path: Path) -> None:
    repo = _fake_repository(tmp_path, chosen_rank=1)
    plain = _stub(tmp_path / "venv-python", 0, "/root/.pyenv/bin/python3.11", "a plain build")

    said = subprocess.run([repo / "scripts" / "venv-note", plain], capture_output=True, text=True, check=True)
    assert said.stdout == ""
    assert said.stderr.startswith("note: .venv runs /root/.pyenv/bin/python3.11 (a plain build);")
    assert f"{tmp_path / 'python3.11'} (3.11.9, build 1) runs the same code faster" in said.stderr  # as chosen
    assert "`make clean install`" in said.stderr
    assert faster_python(repo, plain) == said.stderr.strip().removeprefix("note: ")


def test_nothing_is_said_when_the_venv_runs_as_fast_a_build_or_nothing_can_be_chosen(tmp_path: Path) -> None:
    repo = _fake_repository(tmp_path, chosen_rank=1)
    same = _stub(tmp_path / "venv-python", 1, "/usr/bin/python3.11", "distribution")
    said = subprocess.run([repo / "scripts" / "venv-note", same], capture_output=True, text=True, check=True)
    assert (said.stdout, said.stderr) == ("", "")
    assert faster_python(repo, same) is None

    (repo / "scripts" / "find-python").write_text("#!/bin/sh\nexit 1\n")  # no usable 3.11 at all
    plain = _stub(tmp_path / "plain-python", 0, "/root/.pyenv/bin/python3.11", "a plain build")
    said = subprocess.run([repo / "scripts" / "venv-note", plain], capture_output=True, text=True, check=True)
    assert (said.returncode, said.stderr) == (0, "")
