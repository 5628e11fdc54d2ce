"""One way to tell a user what is wrong with an input: ``field (value ...): rule`` lines.

Scenarios, rules inside scenarios, shipments, bills of materials and API requests are all
validated by pydantic; every entry point turns its errors into the same lines so a field path
reads the same in the CLI, the API and the docs (``events[0].start``).
"""

from __future__ import annotations

from collections.abc import Collection

from pydantic import ValidationError


def field_path(loc: tuple, skip_tags: Collection[str] = ()) -> str:
    """``('events', 0, 'start')`` -> ``events[0].start``.

    Parts pydantic adds for its own bookkeeping (``function-...``, ``literal[...]``) are dropped,
    and so is a tagged-union member name in ``skip_tags`` right after an index: the user wrote
    only the index.
    """
    out = ""
    previous = None
    for part in loc:
        if str(part).startswith(("function-", "literal")):
            continue
        if isinstance(previous, int) and part in skip_tags:
            previous = part
            continue
        previous = part
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def error_line(item: dict, loc: tuple | None = None, prefix: str = "",
               skip_tags: Collection[str] = (), whole: str = "(top level)") -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as ``field (value ...):
    rule``. ``loc`` replaces the item's own location (the API drops FastAPI's leading
    ``body``); the field is prefixed by ``prefix``; ``whole`` names an error of the whole input.

    Values that are mappings, lists or raw bytes are not repeated (they are the user's whole
    block), nor are values longer than 200 characters.
    """
    path = field_path(tuple(item["loc"] if loc is None else loc), skip_tags)
    if prefix:
        path = f"{prefix}{'' if not path or path.startswith('[') else '.'}{path}"
    value = item.get("input")
    shown = ("" if isinstance(value, dict | list | bytes) or len(repr(value)) > 200
             else f" (value {value!r})")
    # pydantic prefixes the message of a validator's ValueError with "Value error, "; the
    # message itself already says what is wrong
    message = item["msg"].removeprefix("Value error, ")
    return f"{path or whole}{shown}: {message}"


def validation_lines(exc: ValidationError, prefix: str = "",
                     skip_tags: Collection[str] = ()) -> list[str]:
    """Each pydantic error as ``field (value ...): rule`` (:func:`error_line`), the field
    prefixed by ``prefix``."""
    return [error_line(item, prefix=prefix, skip_tags=skip_tags) for item in exc.errors()]
