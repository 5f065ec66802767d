"""Enterprise answers' attachments: the limits an answer must keep, and where its files are stored.

    check_answer(text, [len(a.content) for a in items], settings.notify.answers)   # LimitExceeded
    pending = [pending_of(a.name, a.content) for a in items]   # names cleaned, digests; nothing written
    files = store(settings, pending)                           # [{name, sha256, size, path}]

Files are content-addressed: `{state_dir}/attachments/{sha256[:2]}/{sha256}`. No id and no name
from outside ever becomes part of a path (the enterprise's file name is kept as metadata only), a
re-delivery writes nothing new, and every path is checked to resolve inside the attachments root.
The workflow stores files only after the answer was validated and authorized, so a refused
answer writes nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config import ids
from config.schema import AnswerLimits, Settings

_DIGEST = re.compile(r"[0-9a-f]{64}")
# Control characters a text may not hold (PostgreSQL text cannot hold NUL); tab and line breaks are fine.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class LimitExceeded(ValueError):
    """An answer beyond the configured limits; `status` is the HTTP status that says so (413 or 422)."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Pending:
    """An attachment checked and hashed, not yet written."""

    name: str
    sha256: str
    content: bytes


def check_text(text: str, limits: AnswerLimits) -> str:
    """The answer's text, unless it is too long or holds control characters."""
    if len(text) > limits.max_text_chars:
        raise LimitExceeded(f"`text` has {len(text)} characters; at most {limits.max_text_chars} "
                            "(notify.answers.max_text_chars): attach a longer report as a file")
    if _CONTROL.search(text):
        raise LimitExceeded("`text` holds control characters (e.g. NUL); send plain text")
    return text


def check_count(n: int, limits: AnswerLimits) -> None:
    if n > limits.max_attachments:
        raise LimitExceeded(f"{n} attachments; an answer may carry at most {limits.max_attachments} "
                            "(notify.answers.max_attachments)")


def check_size(name: str, size: int, total: int, limits: AnswerLimits) -> None:
    """One attachment of `size` bytes, `total` bytes with those before it: 413 beyond either limit."""
    if size > limits.max_attachment_bytes:
        raise LimitExceeded(f"attachment {name[:80]!r} has {size} bytes; at most {limits.max_attachment_bytes} "
                            "per file (notify.answers.max_attachment_bytes)", 413)
    if total > limits.max_total_bytes:
        raise LimitExceeded(f"the attachments add up to more than {limits.max_total_bytes} bytes "
                            "(notify.answers.max_total_bytes); send fewer or smaller files", 413)


def check_base64_size(name: str, encoded_chars: int, total: int, limits: AnswerLimits) -> None:
    """Refuse an oversized base64 attachment before decoding it (decoded size >= 3/4 of it, minus padding)."""
    least = max(0, encoded_chars * 3 // 4 - 2)
    check_size(name, least, total + least, limits)


def check_answer(text: str, sizes: list[int], limits: AnswerLimits) -> None:
    """All limits of one answer at once (the workflow's last check, whoever parsed the answer)."""
    check_text(text, limits)
    check_count(len(sizes), limits)
    total = 0
    for i, size in enumerate(sizes):
        total += size
        check_size(f"attachments[{i}]", size, total, limits)


def pending_of(name: str, content: bytes) -> Pending:
    """An attachment with its cleaned display name and digest (ValueError for an unusable name)."""
    return Pending(ids.attachment_name(name), hashlib.sha256(content).hexdigest(), content)


def attachments_root(settings: Settings) -> Path:
    return Path(settings.ingest.state_dir) / "attachments"


def blob_path(root: Path, digest: str) -> Path:
    """Where content with SHA-256 `digest` lives; ValueError unless it resolves inside `root`."""
    if not _DIGEST.fullmatch(digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest[:80]!r}")
    base = root.resolve()
    path = (base / digest[:2] / digest).resolve()
    if not path.is_relative_to(base):  # e.g. a symlink planted in the root
        raise ValueError(f"attachment path {path} is outside the attachments root {base}")
    return path


def store(settings: Settings, pending: list[Pending]) -> list[dict[str, Any]]:
    """Write each attachment unless its content is already stored; [{name, sha256, size, path}]."""
    root = attachments_root(settings)
    out = []
    for p in pending:
        path = blob_path(root, p.sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            # Write then rename: a reader never sees a half-written file under the final name.
            tmp = path.with_name(f".{p.sha256}.{uuid.uuid4().hex}.tmp")
            tmp.write_bytes(p.content)
            os.replace(tmp, path)
        out.append({"name": p.name, "sha256": p.sha256, "size": len(p.content), "path": str(path)})
    return out


__all__ = ["LimitExceeded", "Pending", "attachments_root", "blob_path", "check_answer", "check_base64_size",
           "check_count", "check_size", "check_text", "pending_of", "store"]
