"""``python -m bench``: the load benchmark (``make bench``)."""

from bench.run import main

main()
