"""``python -m bench.sqlcount api|worker [args]``: run a PenPay process with every SQL statement counted.

It listens on SQLAlchemy's ``Engine`` class (so the process's own engine, built later in its composition root, is
counted without a line of PenPay changed), then runs the process's usual ``main``. Counts go to
``$BENCH_SQLCOUNT_FILE`` as JSON when the process exits: statements by kind and table (``SELECT … FOR UPDATE
ledger_accounts``), commits and rollbacks. The benchmark runs the API and a worker this way for a short, separate
phase to count the round trips of one deposit; the timed phases run the plain console scripts.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine

_VERB = re.compile(r"^\s*(\w+)", re.S)
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+`?(\w+)`?", re.I)

statements: Counter[str] = Counter()
transactions: Counter[str] = Counter()


def classify(sql: str) -> str:
    """``SELECT ledger_accounts FOR UPDATE``-style label: the verb, the first table, and the locking clause."""
    verb_match = _VERB.match(sql)
    verb = verb_match.group(1).upper() if verb_match else "?"
    table_match = _TABLE.search(sql)
    table = table_match.group(1) if table_match else ""
    label = f"{verb} {table}".strip()
    upper = sql.upper()
    if "FOR UPDATE" in upper:
        label += " FOR UPDATE" + (" SKIP LOCKED" if "SKIP LOCKED" in upper else "")
    elif "ON DUPLICATE KEY" in upper:
        label += " ON DUPLICATE KEY UPDATE"
    return label


def _install() -> None:
    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements[classify(statement)] += 1

    def on_commit(conn: Any) -> None:
        transactions["commit"] += 1

    def on_rollback(conn: Any) -> None:
        transactions["rollback"] += 1

    event.listen(Engine, "before_cursor_execute", on_execute)
    event.listen(Engine, "commit", on_commit)
    event.listen(Engine, "rollback", on_rollback)


def _dump(path: Path) -> None:
    path.write_text(json.dumps({"statements": dict(statements.most_common()), **transactions}, indent=1))


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else ""
    out = os.environ.get("BENCH_SQLCOUNT_FILE", "")
    if target not in ("api", "worker") or not out:
        sys.stderr.write("usage: BENCH_SQLCOUNT_FILE=out.json python -m bench.sqlcount api|worker [args]\n")
        sys.exit(2)
    _install()
    atexit.register(_dump, Path(out))

    def on_term(signum: int, frame: object) -> None:
        # uvicorn restores this handler after its graceful shutdown and raises the signal again
        _dump(Path(out))
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    sys.argv = [f"penpay-{target}", *sys.argv[2:]]
    if target == "api":
        from penpay.api.main import main as run  # noqa: PLC0415 - only after the listeners are in place
    else:
        from penpay.worker.main import main as run  # noqa: PLC0415
    run()


if __name__ == "__main__":
    main()
