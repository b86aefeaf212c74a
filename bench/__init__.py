"""``make bench``: PenPay's load benchmark (issue 6). See ``docs/performance.md`` and ``bench/run.py``."""
