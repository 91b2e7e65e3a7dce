"""``python cli.py ...`` from a checkout: the same typer app as the installed ``faceengine`` command
(``engine/cli.py``)."""

from engine.cli import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
