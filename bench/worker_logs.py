"""What the worker processes' JSON logs say about retries: every failed handler run waits ``claim_idle_ms`` before
it is tried again, and its consumer pauses (growing backoff) before reading on, so these counts explain long tails.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

_ERROR_CLASS = re.compile(r"^(\w+)\(")
_MYSQL_CODE = re.compile(r"\((\d{4}), '")


def summarise(paths: list[Path]) -> dict[str, Any]:
    """Failed handler runs by stream and error (MySQL errors with their code), reclaims and dead letters."""
    failures: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for path in paths:
        with path.open(errors="replace") as lines:
            for line in lines:
                if '"event"' not in line:
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                event = str(record.get("event", ""))
                if event in ("handler_failed_will_retry", "handler_failed_dead_lettering"):
                    error = str(record.get("error", ""))
                    match = _ERROR_CLASS.match(error)
                    label = match.group(1) if match else error[:40]
                    code = _MYSQL_CODE.search(error)
                    if code:
                        label += f" {code.group(1)}"
                    stream = str(record.get("stream", "")).rsplit(":", 1)[-1]
                    failures[f"{stream}: {label}"] += 1
                elif event in ("messages_reclaimed", "message_dead_lettered", "reconciled", "step_done"):
                    events[event] += 1
    return {"handler_failures": dict(failures.most_common()), "events": dict(events.most_common())}
