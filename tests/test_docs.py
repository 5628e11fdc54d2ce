from pathlib import Path

from rareflow.data.docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_table_reference_is_generated_from_schemas():
    committed = (ROOT / "docs" / "data-tables.md").read_text(encoding="utf-8")
    assert committed == render(), "run `make docs` to regenerate docs/data-tables.md"
