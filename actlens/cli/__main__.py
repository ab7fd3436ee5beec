"""``python -m actlens.cli``: the ``actlens`` command."""

from actlens.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
