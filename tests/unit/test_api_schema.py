"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no input may cause a 5xx."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from kbqa.api import APISettings, create_app
from kbqa.config import load_settings
from kbqa.tokenize import Tokenizer

_TOKENIZER = Tokenizer()
DOCS = {
    "pumps.txt": "Pump P-17 must be primed with water before start-up. Open valve V3, then press the green button.",
    "保修.txt": "保修期为两年，自购买之日起计算。",
}


@pytest.fixture
def api_schema(home: Path) -> schemathesis.BaseSchema:
    settings_ = load_settings(home=home, embedding={"model": "fake"}, llm={"backend": "fake"})
    app = create_app(settings_, APISettings(), tokenizer=_TOKENIZER)
    with TestClient(app) as client:  # the knowledge base the schema's examples name, with documents
        client.post("/api/kbs", json={"name": "manuals"})
        files = [("files", (name, text.encode(), "text/plain")) for name, text in DOCS.items()]
        job = client.post("/api/kbs/manuals/files", files=files).json()["job"]["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{job}").json()["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline
            time.sleep(0.02)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck),
          phases=[Phase.explicit, Phase.generate])
def test_no_input_makes_a_server_error(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=[not_a_server_error])


def test_source_schema_lists_exactly_the_library_source_fields() -> None:
    # api/models.SourceOut documents Source.to_json() for the OpenAPI schema by hand; keep them one shape.
    from kbqa.api.models import SourceOut
    from kbqa.schema import Source

    shape = Source(1, "a.pdf", "knowledge/k/a.pdf", 2, "Intro", 0.5, "text", "abc").to_json()
    assert list(SourceOut.model_fields) == list(shape)
