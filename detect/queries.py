"""Reads of detect's alert store for the API and metrics: an alerts row as the API's Alert, counts,
job watermarks.

Reads that join an alert to its case or filing belong to notify (notify/queries.py), which builds
on these; detect knows nothing of cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from detect.store import alerts_table, watermarks_table
from core.db import reading
from core.time import as_utc

TIMES = ("window_start", "window_end", "first_seen", "last_seen", "updated_at", "resolved_at")


def alert_dict(m: Mapping[str, Any]) -> dict[str, Any]:
    """An alerts row as the API's Alert (the store's `limit_value` column is `limit`)."""
    d = dict(m)
    d["limit"] = d.pop("limit_value", None)
    for k in TIMES:
        d[k] = as_utc(d.get(k))
    return d


def alerts_by_kind_status(engine: Engine) -> dict[tuple[str, str], int]:
    """Number of alerts per (kind, status), for the metrics endpoint."""
    a = alerts_table.c
    with reading(engine).connect() as conn:
        rows = conn.execute(select(a.kind, a.status, func.count()).group_by(a.kind, a.status))
        return {(k, s): int(n) for k, s, n in rows}


def watermarks(engine: Engine) -> dict[str, datetime]:
    """job -> end of the last window it evaluated (aware UTC), for the metrics endpoint."""
    w = watermarks_table.c
    with reading(engine).connect() as conn:
        return {job: as_utc(pos) for job, pos in conn.execute(select(w.job, w.position)).all()}
