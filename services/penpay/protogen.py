"""Generate the gRPC/protobuf Python code from ``proto/`` into ``penpay._proto`` (run by ``make proto``).

protoc names generated modules after the proto package (``penpay.gateway.v1``), which would shadow our own
``penpay.gateway`` process package, so the imports between generated modules are rewritten to be relative.
The generated files are git-ignored and never edited by hand.
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
from pathlib import Path

_ABS_IMPORT = re.compile(r"^from ((?:\w+\.)*\w+) import (\w+_pb2(?:_grpc)?) as", re.MULTILINE)


def generate(proto_root: Path, out_dir: Path) -> list[Path]:
    from grpc_tools import protoc  # noqa: PLC0415 - build-time tool, imported only when generating

    protos = sorted(proto_root.rglob("*.proto"))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    (out_dir / "__init__.py").write_text('"""Generated gRPC code (make proto). Do not edit."""\n')
    if not protos:
        return []
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{proto_root}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *[str(p) for p in protos],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    generated = sorted(out_dir.rglob("*.py")) + sorted(out_dir.rglob("*.pyi"))
    packages = {d for p in generated for d in (p.parent, *p.parent.parents) if d.is_relative_to(out_dir)}
    for directory in packages:
        init = directory / "__init__.py"
        if not init.exists():
            init.write_text("")
    for path in generated:
        text = path.read_text()
        here = ".".join(path.parent.relative_to(out_dir).parts)
        text = _ABS_IMPORT.sub(functools.partial(_relative, here=here), text)
        path.write_text(text)
    return generated


def _relative(match: re.Match[str], *, here: str) -> str:
    package, module = match.group(1), match.group(2)
    if package == here:
        return f"from . import {module} as"
    return f"from penpay._proto.{package} import {module} as"


def main() -> None:
    proto_root, out_dir = (Path(a) for a in sys.argv[1:3])
    files = generate(proto_root, out_dir)
    sys.stdout.write(f"generated {len(files)} files into {out_dir}\n")


if __name__ == "__main__":
    main()
