"""Case outcomes for statistics and reports: how the cases of a period ended and how long they took.

    outcomes = case_outcomes(engine, start, end, now)              # the whole city
    outcomes = case_outcomes(engine, start, end, now, enterprise="e1")

A case belongs to the period in which it was opened (`opened_at`, the event time of its first
alert). Times to close are closed_at - opened_at, in hours. Overdue: a case still open past its
rectification deadline at `now`, or closed after it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select

from core.db import reading
from core.time import as_utc
from notify.tables import CLOSED_STATES
from notify.tables import cases as cases_t

COLUMNS = ["enterprise", "problem", "state", "opened_at", "closed_at", "deadline_at"]


def case_frame(engine: Engine, start: datetime, end: datetime, enterprise: str | None = None) -> pd.DataFrame:
    """The cases opened in [start, end): enterprise, problem, state, opened_at, closed_at, deadline_at."""
    c = cases_t.c
    q = select(c.enterprise_id, c.problem, c.state, c.opened_at, c.closed_at, c.deadline_at).where(
        c.opened_at >= start, c.opened_at < end)
    if enterprise is not None:
        q = q.where(c.enterprise_id == enterprise)
    with reading(engine).connect() as conn:
        rows = [(e, p, s, as_utc(o), as_utc(cl), as_utc(d)) for e, p, s, o, cl, d in conn.execute(q).all()]
    return pd.DataFrame(rows, columns=COLUMNS)


def _summary(df: pd.DataFrame, now: datetime) -> dict[str, Any]:
    closed = df[df["state"].isin(CLOSED_STATES)]
    hours = [(c - o).total_seconds() / 3600 for o, c in zip(closed["opened_at"], closed["closed_at"]) if c is not None]
    open_ = df[~df["state"].isin(CLOSED_STATES)]
    overdue = sum(1 for d in open_["deadline_at"] if d is not None and d < now) + sum(
        1 for d, c in zip(closed["deadline_at"], closed["closed_at"]) if d is not None and c is not None and c > d)
    return {
        "opened": int(len(df)),
        "closed": int(len(closed)),
        "verified": int((df["state"] == "verified").sum()),
        "dismissed": int((df["state"] == "dismissed").sum()),
        "escalated": int((df["state"] == "escalated").sum()),
        "open": int(len(open_)),
        "overdue": int(overdue),
        "mean_hours_to_close": round(sum(hours) / len(hours), 1) if hours else None,
        "median_hours_to_close": round(float(pd.Series(hours).median()), 1) if hours else None,
    }


def case_outcomes(engine: Engine, start: datetime, end: datetime, now: datetime,
                  enterprise: str | None = None) -> dict[str, Any]:
    """Outcomes of the period's cases: totals, by state, by problem, and per enterprise."""
    df = case_frame(engine, start, end, enterprise)
    return {
        "total": _summary(df, now),
        "by_state": {str(k): int(v) for k, v in df["state"].value_counts().sort_index().items()},
        "by_problem": {str(k): int(v) for k, v in df["problem"].value_counts().sort_index().items()},
        "enterprises": [{"enterprise": str(e), **_summary(g, now)} for e, g in df.groupby("enterprise")],
    }
