"""What an identifier arriving from outside may look like: one strict pattern per kind, in one place.

    ids.check("case", case_id)            # the value, or InvalidId saying which rule it breaks
    ids.valid("mn", mn)                   # True / False
    ids.PATTERNS["answer"]                # the regex, for pydantic / FastAPI `pattern=`
    ids.attachment_name("../a\\x00.pdf")  # 'a.pdf': a file name kept as metadata only

Ids are data, never paths: nothing derived from one is ever joined into a file path (attachments
are stored under their SHA-256, see notify/attachments.py). The patterns still refuse what could
make trouble on the way: path separators, a leading dot, NUL and other control characters, MQTT
wildcards, whitespace and anything over 64 characters. Registry ids should follow them too: an
id that does not cannot be named in an API path, a query or an MQTT answer.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath
from typing import Literal

Kind = Literal["id", "case", "answer", "enterprise", "outlet", "mn", "device", "alert", "ticket", "notice"]

_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
PATTERNS: dict[str, str] = {
    "id": _ID, "case": _ID, "enterprise": _ID, "outlet": _ID, "device": _ID, "alert": _ID, "ticket": _ID,
    "notice": _ID,
    # The answers table's key holds 32 characters.
    "answer": r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}",
    # HJ 212 MNs are letters and digits; '-' and '_' appear in test and vendor MNs.
    "mn": r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}",
}
RULES: dict[str, str] = {
    kind: ("1-32" if kind == "answer" else "1-64") + " characters: ASCII letters, digits"
    + (", '-' and '_'" if kind == "mn" else ", '.', '-' and '_'") + ", starting with a letter or digit"
    for kind in PATTERNS}
_COMPILED = {kind: re.compile(p) for kind, p in PATTERNS.items()}
MAX_NAME_CHARS = 255


class InvalidId(ValueError):
    """An identifier that does not match the pattern of its kind; the message says the rule."""

    def __init__(self, kind: str, value: object, field: str | None = None) -> None:
        self.kind, self.value, self.field = kind, value, field or kind
        shown = repr(value if not isinstance(value, str) or len(value) <= 80 else value[:80] + "...")
        super().__init__(f"`{self.field}` {shown} is not a valid {kind} id: {RULES[kind]}")


def valid(kind: Kind, value: object) -> bool:
    """True when `value` is a string matching the pattern of `kind`."""
    return isinstance(value, str) and _COMPILED[kind].fullmatch(value) is not None


def check(kind: Kind, value: object, field: str | None = None) -> str:
    """`value` when it is a valid `kind` id; InvalidId (a ValueError) naming `field` otherwise."""
    if not valid(kind, value):
        raise InvalidId(kind, value, field)
    return value  # type: ignore[return-value]


def attachment_name(name: str) -> str:
    """The enterprise's file name, cleaned for display: last path component, no control or format
    characters (NUL, line breaks, bidi overrides), at most 255 characters. ValueError when nothing
    usable is left. Never used to build a path."""
    base = PurePosixPath(name.replace("\\", "/")).name
    base = "".join(ch for ch in base if unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")).strip()
    if base in ("", ".", ".."):
        raise ValueError(f"unusable attachment name {name[:80]!r}")
    return base[:MAX_NAME_CHARS]


__all__ = ["PATTERNS", "RULES", "InvalidId", "Kind", "attachment_name", "check", "valid"]
