"""Cases, their operator actions, enterprise answers, and notices."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from notify import queries as q
from center.api_models import (AnswerIn, AnswerResult, CaseAction, CaseOut, CaseSummary, GroupAction, GroupOut,
                               NoticeOut)
from center.auth import Principal, enterprise_user, operator, operator_or_enterprise
from config import ids
from config.ids import attachment_name
from config.schema import AnswerLimits
from notify import workflow
from notify.answers_mqtt import Attachment, decode_attachments
from notify.attachments import LimitExceeded, check_count, check_size, check_text
from notify.events import TransitionError

router = APIRouter(tags=["cases"])


def engine_of(request: Request) -> Engine:
    return request.app.state.engine


def names_of(request: Request) -> dict[str, str]:
    return {e.id: e.name for e in request.app.state.settings.registry.enterprises}


def _not_found(case_id: str) -> HTTPException:
    return HTTPException(404, detail=f"no case {case_id!r} that you can see; list yours with GET /api/cases")


def _named(request: Request, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = names_of(request)
    outlets = {(e.id, o.id): o.name for e in request.app.state.settings.registry.enterprises for o in e.outlets}
    return [{**r, "enterprise_name": names.get(r["enterprise_id"], ""),
             "outlet_name": outlets.get((r["enterprise_id"], r.get("outlet_id", "")), "")} for r in rows]


def name_matches(request: Request, text: str | None) -> dict[str, list[str]]:
    """Ids whose names contain `text` (case-insensitive): enterprises, outlets, pollutants (zh/en) and
    kinds (their labels), so that a search for 热电 or 二氧化硫 finds rows that store only ids."""
    if not text:
        return {}
    from config.tables import pollutants
    from notify.notices import problem_labels

    low = text.lower()
    reg = request.app.state.settings.registry
    return {
        "enterprise": [e.id for e in reg.enterprises if low in e.name.lower()],
        "outlet": sorted({o.id for e in reg.enterprises for o in e.outlets if o.name and low in o.name.lower()}),
        "pollutant": [p.code for p in pollutants().values() if low in p.zh.lower() or low in p.en.lower()],
        "kind": sorted({k for labels in problem_labels().values() for k, v in labels.items() if low in v.lower()}),
    }


def page_of(request: Request, limit: int, offset: int, sort: str | None, text: str | None) -> q.Page:
    return q.Page(limit=limit, offset=offset, sort=sort, q=text or None, also=name_matches(request, text))


def paged(response: Response, rows_total: tuple[list[dict[str, Any]], int]) -> list[dict[str, Any]]:
    """The rows; their total under the filters and search goes in the X-Total-Count header."""
    rows, total = rows_total
    response.headers["X-Total-Count"] = str(total)
    return rows


def bad_sort(exc: ValueError) -> HTTPException:
    return HTTPException(422, detail=str(exc))


@router.get("/api/cases", response_model=list[CaseSummary])
def list_cases(request: Request, response: Response, state: str | None = None, enterprise: str | None = None,
               kind: str | None = None, severity: str | None = None, open: bool | None = None,
               limit: int = Query(200, ge=1, le=1000), offset: int = Query(0, ge=0, le=10_000_000),
               sort: str | None = Query(None, description="a column (opened_at, deadline_at, severity, state, "
                                                          "enterprise, kind, ...), -column for descending"),
               q_: str | None = Query(None, alias="q", max_length=100, description="search ids and names"),
               who: Principal = Depends(operator_or_enterprise)) -> list[dict[str, Any]]:
    """Cases, newest first; an enterprise user gets its own only. X-Total-Count: all that match."""
    try:
        rows, total = q.case_page(engine_of(request), who.scope, state=state, enterprise=enterprise, kind=kind,
                                  severity=severity, open_only=open, page=page_of(request, limit, offset, sort, q_))
    except ValueError as exc:
        raise bad_sort(exc) from exc
    return paged(response, (_named(request, rows), total))


def load_case(request: Request, case_id: str, who: Principal) -> dict[str, Any]:
    case = q.case_detail(engine_of(request), case_id, who.scope)
    if case is None:
        raise _not_found(case_id)
    return _named(request, [case])[0]


@router.get("/api/cases/{case_id}", response_model=CaseOut)
def get_case(request: Request, case_id: str, who: Principal = Depends(operator_or_enterprise)) -> dict[str, Any]:
    """One case with its history, alerts, notices, answers and ticket."""
    return load_case(request, case_id, who)


@router.post("/api/cases/{case_id}/actions", response_model=CaseOut)
def act(request: Request, case_id: str, body: CaseAction, who: Principal = Depends(operator)) -> dict[str, Any]:
    """An operator's action; 409 when the case's state does not allow it."""
    engine, settings = engine_of(request), request.app.state.settings
    if q.case_row(engine, case_id, None) is None:
        raise _not_found(case_id)
    now = datetime.now(timezone.utc)
    try:
        _apply(engine, settings, case_id, body, now, who.actor)
    except TransitionError as exc:
        raise HTTPException(409, detail=f"{exc}; reload the case and choose an action its state allows") from exc
    request.app.state.broadcaster.cases_changed(engine, [case_id], names_of(request))
    return load_case(request, case_id, who)


def _require(value: str | None, what: str, action: str) -> str:
    if not value or not value.strip():
        raise HTTPException(422, detail=f"action {action!r} needs `{what}`")
    return value


def _apply(engine: Engine, settings: Any, case_id: str, body: CaseAction, now: datetime, actor: str) -> None:
    a = body.action
    kw: dict[str, Any] = {}
    if a == "note":
        kw["text"] = _require(body.text, "text", a)
    elif a == "acknowledge":  # the center's mark (the enterprise's acknowledgement is its answer)
        kw["text"] = body.text or ""
    elif a == "dismiss":
        kw["reason"] = _require(body.reason, "reason", a)
    elif a == "assign":
        kw["assignee"] = _require(body.assignee, "assignee", a)
    elif a == "escalate":
        kw["priority"] = body.priority
    elif a == "route":
        kw["officer"] = _require(body.officer, "officer", a)
    elif a == "assess_pollution":
        if body.consequence is None:
            raise HTTPException(422, detail="action 'assess_pollution' needs `consequence` (true or false)")
        kw.update(consequence=body.consequence, note=body.text or "")
    workflow.act(engine, settings, case_id, a, now, actor, **kw)


# -- answers --------------------------------------------------------------------------------------

_ANSWER_SCHEMA = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/AnswerIn"}},  # added by app.extra_schemas
    "multipart/form-data": {"schema": {"type": "object", "required": ["answer_id", "type"], "properties": {
        "answer_id": {"type": "string", "maxLength": 32}, "type": {"enum": ["acknowledge", "rectification", "contest"]},
        "text": {"type": "string"},
        "attachments": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


@router.post("/api/cases/{case_id}/answers", response_model=AnswerResult, openapi_extra=_ANSWER_SCHEMA,
             responses={400: {"description": "a malformed case id"},
                        413: {"description": "the body or the attachments are larger than the limits"},
                        422: {"description": "an invalid answer: the reason says which field"}})
async def post_answer(request: Request, case_id: str, who: Principal = Depends(enterprise_user)) -> dict[str, Any]:
    """An enterprise's answer to a notice about its own case: JSON, or multipart with files.

    Limits (notify.answers): text length, number of attachments, bytes per attachment and in all;
    the whole body at most center.max_body_bytes."""
    engine = engine_of(request)
    if await _run_sync(q.case_row, engine, case_id, who.scope) is None:
        raise _not_found(case_id)
    body, files = await _read_answer(request, request.app.state.settings.notify.answers)
    try:
        result = await _run_sync(workflow.answer, engine, request.app.state.settings, who.enterprise_id, case_id,
                                 body.type, body.text, files, body.answer_id, datetime.now(timezone.utc))
    except workflow.AnswerError as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    await _run_sync(request.app.state.broadcaster.cases_changed, engine, [case_id], names_of(request))
    return result


async def _run_sync(fn: Any, *args: Any) -> Any:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args)


def _invalid(exc: ValidationError) -> HTTPException:
    return HTTPException(422, detail=exc.errors(include_url=False, include_context=False, include_input=False))


FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")  # a form without files is urlencoded


async def _read_answer(request: Request, limits: AnswerLimits) -> tuple[AnswerIn, list[Attachment]]:
    """The answer and its decoded attachments, every limit checked before anything big is decoded."""
    try:
        if request.headers.get("content-type", "").startswith(FORMS):
            body, files = await _read_multipart(request, limits)
        else:
            body, files = await _read_json(request, limits)
        ids.check("answer", body.answer_id, "answer_id")
        check_text(body.text, limits)
    except ValidationError as exc:
        raise _invalid(exc) from exc
    except LimitExceeded as exc:
        raise HTTPException(exc.status, detail=str(exc)) from exc
    except ValueError as exc:  # an id off its pattern, an unusable file name: in the body, so 422
        raise HTTPException(422, detail=str(exc)) from exc
    return body, files


async def _read_json(request: Request, limits: AnswerLimits) -> tuple[AnswerIn, list[Attachment]]:
    raw = await request.body()
    if not raw.strip():
        raise HTTPException(422, detail="empty body: send the answer as JSON {answer_id, type, text, attachments} "
                                        "or as multipart/form-data")
    body = AnswerIn.model_validate_json(raw)
    return body, decode_attachments([(a.name, a.content_base64) for a in body.attachments], limits)


async def _read_multipart(request: Request, limits: AnswerLimits) -> tuple[AnswerIn, list[Attachment]]:
    try:
        # Text fields up to the text limit, percent-encoded UTF-8 in a urlencoded form (12 bytes a character).
        form = await request.form(max_files=limits.max_attachments, max_part_size=limits.max_text_chars * 12 + 1024)
    except StarletteHTTPException as exc:
        if exc.status_code != 400:  # 413 from the body limit stays a 413
            raise
        raise HTTPException(422, detail=f"the form cannot be read: {exc.detail} (an answer carries at most "
                                        f"{limits.max_attachments} attachments, notify.answers.max_attachments, and "
                                        f"{limits.max_text_chars} characters of text, max_text_chars)") from exc
    try:
        fields = {k: form.get(k) for k in ("answer_id", "type", "text") if isinstance(form.get(k), str)}
        body = AnswerIn.model_validate({"text": "", **fields})
        uploads = form.getlist("attachments")
        check_count(len(uploads), limits)
        files, total = [], 0
        for up in uploads:
            if isinstance(up, str):
                raise HTTPException(422, detail="`attachments` must be files (multipart file parts)")
            name = attachment_name(up.filename or "attachment")
            if up.size is not None:  # refuse before reading a spooled file back into memory
                check_size(name, up.size, total + up.size, limits)
            data = await up.read()
            total += len(data)
            check_size(name, len(data), total, limits)
            files.append(Attachment(name, data))
    finally:
        await form.close()  # Starlette spools big parts to unnamed temporary files: release them now
    return body, files


# -- notices --------------------------------------------------------------------------------------

@router.get("/api/notices", response_model=list[NoticeOut], tags=["notices"])
def list_notices(request: Request, case_id: str | None = None, status: str | None = None,
                 limit: int = Query(200, ge=1, le=1000),
                 who: Principal = Depends(operator_or_enterprise)) -> list[dict[str, Any]]:
    """Notices, newest first; an enterprise gets those addressed to it."""
    return q.list_notices(engine_of(request), who.scope, case_id=case_id, status=status, limit=limit)


# -- grouped findings (one cause, many stations) ----------------------------------------------------

@router.get("/api/groups", response_model=list[GroupOut], tags=["groups"])
def list_groups(request: Request, status: str | None = None, who: Principal = Depends(operator)) -> list[dict[str, Any]]:
    """Findings held in groups (a shared cause): pending ones send nothing until confirmed."""
    return q.list_groups(engine_of(request), status)


@router.get("/api/groups/{group_id}", response_model=GroupOut, tags=["groups"])
def get_group(request: Request, group_id: str, who: Principal = Depends(operator)) -> dict[str, Any]:
    """One group with the ids of the cases it holds."""
    return _group(request, group_id)


def _group(request: Request, group_id: str) -> dict[str, Any]:
    g = q.get_group(engine_of(request), group_id)
    if g is None:
        raise HTTPException(404, detail=f"no group {group_id!r}; list them with GET /api/groups")
    return g


@router.post("/api/groups/{group_id}/actions", response_model=GroupOut, tags=["groups"])
def act_on_group(request: Request, group_id: str, body: GroupAction, who: Principal = Depends(operator)) -> dict[str, Any]:
    """confirm (each enterprise gets one notice listing its findings) or dismiss (with a reason)."""
    from notify.groups import GroupError

    engine, settings = engine_of(request), request.app.state.settings
    _group(request, group_id)
    now = datetime.now(timezone.utc)
    try:
        if body.action == "confirm":
            g = workflow.confirm_group(engine, settings, group_id, now, who.actor)
        else:
            g = workflow.dismiss_group(engine, settings, group_id, now, who.actor, _require(body.reason, "reason", "dismiss"))
    except GroupError as exc:
        raise HTTPException(409, detail=str(exc)) from exc
    request.app.state.broadcaster.cases_changed(engine, g["case_ids"], names_of(request))
    return g
