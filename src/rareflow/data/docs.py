"""Generate the table reference (docs/data-tables.md) from the schema files.

Run ``python -m rareflow.data.docs > docs/data-tables.md``; a test fails when the committed file
differs from what this prints, so the docs cannot drift from the schemas the validator uses.
"""

from __future__ import annotations

from rareflow.data.schema import all_schemas


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    lines = [
        "# Dataset tables (generated)",
        "",
        "Generated from `src/rareflow/data/schema/*.csv` by `python -m rareflow.data.docs`; "
        "do not edit by hand. The same files drive `rareflow data validate`.",
        "",
        "Allowed values: `ref:T.c` must exist in table T column c; `a|b` one of those values; "
        "`min:x` at least x; `range:a:b` between a and b; `unique` no duplicates. "
        "Type `list` holds several values separated by `;`.",
        "",
    ]
    for name, schema in all_schemas().items():
        lines += [f"## {name}", "", "| column | type | unit | required | allowed | description |",
                  "|---|---|---|---|---|---|"]
        for c in schema.columns:
            lines.append(
                f"| `{c.column}` | {c.type} | {_cell(c.unit)} | {'yes' if c.required else ''} | "
                f"{_cell(c.allowed)} | {_cell(c.description)} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
