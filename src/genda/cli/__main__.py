"""``python -m genda.cli``: the ``genda`` command."""

from genda.cli import app

if __name__ == "__main__":  # pragma: no cover
    app()
