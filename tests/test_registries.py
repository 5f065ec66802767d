"""One registry per extension point (detectors, channels, decoders), and the readers that use it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from center import board
from config.loader import from_mapping
from config.schema import EscalationSettings, GroupingSettings, Officer
from detect.registry import DetectorConfigError, build_detectors, detector_classes, kinds_in
from ingest.decode import DECODERS, FALLBACK, decode_payload
from ingest.model import Rejected
from notify import rules
from notify.channels import CHANNELS, channels_for, default_channels
from notify.notices import LANGUAGES, problem_label
from tests.detect_helpers import registry


def _settings(**over: Any):
    return from_mapping({"registry": registry(), **over}, source="test", env={})


def test_the_board_gets_every_kind_and_its_labels_from_the_service() -> None:
    app = FastAPI()
    board.mount(app)
    with TestClient(app) as client:
        served = client.get("/board/kinds").json()
    assert [k["kind"] for k in served] == sorted(detector_classes())
    for k in served:
        cls = detector_classes()[k["kind"]]
        assert k["labels"] == cls.labels and k["category"] == cls.category
        assert set(k["labels"]) == set(LANGUAGES)


def test_notice_labels_and_rules_read_the_tags() -> None:
    assert problem_label("en", "offline") == detector_classes()["offline"].problem["en"]
    assert problem_label("zh-CN", "no_such_kind") == "no_such_kind"
    assert rules.is_exceedance({"kind": "daily_exceedance"}) and not rules.is_exceedance({"kind": "offline"})
    assert kinds_in("exceedance") == ("daily_exceedance", "exceedance")
    # The default escalation list is the falsification category (config/ cannot import detect/).
    assert sorted(EscalationSettings().immediate_kinds) == list(kinds_in("falsification"))
    assert set(GroupingSettings().kinds) <= set(detector_classes())
    with pytest.raises(ValueError, match="unknown category"):
        kinds_in("misc")


@pytest.mark.parametrize("where,over", [
    ("notify.escalation.immediate_kinds", {"notify": {"escalation": {"immediate_kinds": ["constant_valu"]}}}),
    ("notify.grouping.kinds", {"notify": {"grouping": {"kinds": ["offlin"]}}}),
    ("notify.deadline_hours", {"notify": {"deadline_hours": {"default": 72, "exceedence": 24}}}),
    ("detect.overrides.0.kind", {"detect": {"overrides": [{"kind": "hotspots", "params": {}}]}}),
])
def test_settings_naming_an_unknown_kind_are_refused_with_the_key(where: str, over: dict[str, Any]) -> None:
    with pytest.raises(DetectorConfigError) as err:
        build_detectors(_settings(**over))
    assert any(p.startswith(where) and "unknown detector kind" in p for p in err.value.problems)


def test_channels_come_from_one_registry() -> None:
    assert [c.name for c in CHANNELS] == ["mqtt", "webhook", "email"]
    plain = _settings()
    assert sorted(default_channels(plain)) == ["mqtt", "webhook"]
    ent = plain.registry.enterprises[0].model_copy(update={"contact": plain.registry.enterprises[0].contact.model_copy(
        update={"email": "ops@plant.example", "webhook_url": "https://plant.example/hook"})})
    assert channels_for(plain, "enterprise", ent) == ["mqtt", "webhook"]  # no SMTP: no e-mail
    assert channels_for(plain, "enterprise", None) == ["mqtt"]
    smtp = _settings(notify={"smtp": {"host": "127.0.0.1"}})
    assert sorted(default_channels(smtp)) == ["email", "mqtt", "webhook"]
    assert channels_for(smtp, "enterprise", ent) == ["mqtt", "webhook", "email"]
    assert channels_for(smtp, "officer", Officer(id="o1", name="Li", email="li@bureau.example")) == ["mqtt", "email"]
    assert channels_for(smtp, "officer", Officer(id="o2", name="Wang")) == ["mqtt"]


def test_decoders_come_from_one_registry() -> None:
    assert [d.name for d in DECODERS] == ["hj212", "json"] and FALLBACK.name == "hj212"
    assert [d.name for d in DECODERS if d.claims(b'  {"mn": "X"}')] == ["json"]
    assert [d.name for d in DECODERS if d.claims(b"##0101QN=...")] == ["hj212"]
    with pytest.raises(Rejected):  # claimed by nobody: read as HJ 212, which says what is wrong
        decode_payload(b"garbage")
