"""``python -m rareflow.cli_main``: the command line without the console script."""

from rareflow.cli import entry_point

if __name__ == "__main__":
    entry_point()
