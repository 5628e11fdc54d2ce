"""``python -m rareflow.cli_main``: the command line without the console script."""

from rareflow.cli import app

if __name__ == "__main__":
    app()
