"""What kind of Python 3.11 build runs this file: one line for ``scripts/find-python`` (and ``make bench``'s record).

Prints ``<rank>\t<executable>\t<version>\t<build>`` and exits 0 when this interpreter is Python 3.11 and can create a
virtual environment (``venv`` and ``ensurepip``: Debian ships the latter apart, in ``python3.11-venv``); exits 1
otherwise. The rank orders interpreters by how fast the same Python code runs on them:

2. built with ``--enable-optimizations`` (profile-guided optimisation: python.org's builds, the official Docker
   images, pyenv with ``PYTHON_CONFIGURE_OPTS="--enable-optimizations --with-lto"``);
1. the distribution's own ``/usr/bin/python3.11``: Debian and Ubuntu build it with PGO and LTO by their own rules
   (their configure line does not say so) and link the interpreter statically;
0. anything else, such as pyenv's default build: no PGO, no LTO, ``libpython`` as a shared library. On PenPay's
   benchmark machine it executes 19-41 % more instructions than Debian's for the same Python code (callgrind), and
   every PenPay process is Python (docs/performance.md, round 19).

Standard library only: it runs before the virtual environment exists.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig

OPTIMISED, DISTRIBUTION, PLAIN = 2, 1, 0


def describe(executable: str, config_args: str) -> tuple[int, str]:
    """The rank and a few words on the build, from the interpreter's path and its configure arguments."""
    if "--enable-optimizations" in config_args:
        lto = " and LTO" if "--with-lto" in config_args else ""
        return OPTIMISED, f"built with PGO{lto} (--enable-optimizations)"
    if os.path.dirname(executable) == "/usr/bin":
        return DISTRIBUTION, "the distribution's build: PGO and LTO on Debian and Ubuntu"
    return PLAIN, "a plain build: no PGO, built without --enable-optimizations"


def main() -> int:
    if sys.version_info[:2] != (3, 11):
        return 1
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
        return 1
    executable = os.path.realpath(sys.executable)
    rank, build = describe(executable, sysconfig.get_config_var("CONFIG_ARGS") or "")
    version = ".".join(str(part) for part in sys.version_info[:3])
    sys.stdout.write(f"{rank}\t{executable}\t{version}\t{build}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
