"""The built-in payloads are declared once (sluice.core.tasks): the API's checks,
the handlers' decoding, the OpenAPI document and docs/worker.md all follow it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sluice.core.tasks import BUILTIN_PAYLOADS, TaskCatalog, payload_schemas
from sluice.worker.context import JobContext, NonRetryableError
from sluice.worker.registry import REGISTRY
from sluice.worker.resources import Resources
from tests.worker.helpers import ROOT, claimed, worker_settings

REGISTRY.import_modules(())

# Payloads that do not fit, and the field each is wrong in (as the API names it).
BAD = [
    ("sleep", {}, "payload.seconds"),
    ("sleep", {"seconds": "soon"}, "payload.seconds"),
    ("sleep", {"seconds": -1}, "payload.seconds"),
    ("sleep", {"seconds": 1, "extra": 1}, "payload.extra"),
    ("sleep", [], "payload"),
    ("shell", {"argv": []}, "payload.argv"),
    ("shell", {"argv": "ls"}, "payload.argv"),
    ("shell", {"argv": ["ls"], "env": {"A": 1}}, "payload.env[...]"),
    ("shell", {"argv": ["ls"], "result": "all"}, "payload.result"),
    ("http", {"url": "ftp://x"}, "payload.url"),
    ("http", {"url": "http://x", "method": "post"}, "payload.method"),
    ("http", {"url": "http://x", "headers": {"A": 1}}, "payload.headers[...]"),
    ("http", {"url": "http://x", "json": {}, "body": "b"}, "payload.body"),
    ("http", {"url": "http://x", "expect": [200, 1000]}, "payload.expect[1]"),
    ("http", {"url": "http://x", "timeout": 0}, "payload.timeout"),
    ("http", {"url": "http://x", "max_body": -1}, "payload.max_body"),
    ("email", {"to": "a@example.com", "subject": "s"}, "payload.to"),
    ("email", {"to": ["not an address"], "subject": "s"}, "payload.to[0]"),
    ("email", {"to": ["a@example.com"]}, "payload.subject"),
    ("webhook", {"url": "http://x", "event": []}, "payload.event"),
    ("webhook", {"event": {}}, "payload.url"),
]
GOOD = [
    ("noop", ["anything"]),
    ("sleep", {"seconds": 0}),
    ("shell", {"argv": ["true"], "result": "last_line_json"}),
    ("http", {"url": "https://example.com", "params": {"a": 1}, "body": "x", "method": "PUT"}),
    ("email", {"to": ["a@example.com"], "subject": "s"}),  # the body may be left out
    ("webhook", {"url": "https://example.com", "event": {}, "secret": None}),
]


@pytest.fixture
async def ctx():
    settings = worker_settings(allow_shell=True, smtp_url="smtp://127.0.0.1:1")
    resources = Resources(settings, None)
    yield JobContext(resources, claimed())
    await resources.close()


@pytest.mark.parametrize(("task", "payload", "field"), BAD)
async def test_the_api_and_the_worker_refuse_the_same_payloads(ctx, task, payload, field):
    [(api_field, api_message)] = TaskCatalog(allow_shell=True).problems(task, payload)
    assert api_field == field
    with pytest.raises(NonRetryableError) as refused:
        await REGISTRY.get(task).call(payload, ctx)
    assert str(refused.value) == f"{task}: {field}: {api_message}"


@pytest.mark.parametrize(("task", "payload"), GOOD)
def test_the_api_accepts_what_the_worker_runs(task, payload):
    assert TaskCatalog(allow_shell=True).problems(task, payload) == []


def test_task_names_follow_the_rule_and_nothing_else():
    catalog = TaskCatalog(allow_shell=False)
    assert catalog.problems("reports.build", {"any": "thing"}) == []  # a worker's handler
    assert catalog.problems("billing:invoice-v2", None) == []
    assert [f for f, _ in catalog.problems("not a name", {})] == ["task"]
    assert [f for f, _ in catalog.problems(7, {})] == ["task"]
    assert catalog.problems("shell", {"argv": ["ls"]}) == [
        ("task", "shell tasks are disabled on this server (SLUICE_ALLOW_SHELL=1)")
    ]


def test_the_api_imports_neither_the_worker_nor_the_users_handlers():
    """The API learns nothing from the workers' code: it starts with a
    SLUICE_TASK_MODULES it could not even import."""
    script = (
        "import sys\n"
        "from sluice.core.config import load\n"
        "from sluice.main import create_app\n"
        "from sluice.http.settings import ApiSettings\n"
        "create_app(load(ApiSettings, jwt_secret='x' * 32))\n"
        "print(sorted(m for m in sys.modules if m == 'sluice.worker' "
        "or m.startswith('sluice.worker.')))\n"
    )
    env = {**os.environ, "SLUICE_TASK_MODULES": "no_such_module.tasks"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_openapi_document_shows_the_payloads(client_schema):
    payload = client_schema["components"]["schemas"]["JobSubmit"]["properties"]["payload"]
    *shown, anything = payload["anyOf"]
    assert anything == {}  # other tasks take any JSON

    def fields(schema: dict[str, Any]) -> tuple[str, list[str], list[str]]:
        return schema["title"], sorted(schema["properties"]), sorted(schema.get("required", []))

    assert [fields(s) for s in shown] == [fields(s) for s in payload_schemas().values()]
    assert [s["title"] for s in shown] == [m.__name__ for m in BUILTIN_PAYLOADS.values() if m]


@pytest.fixture
def client_schema() -> dict[str, Any]:
    from sluice.core.config import load
    from sluice.http.settings import ApiSettings
    from sluice.main import create_app

    app = create_app(load(ApiSettings, environ={}, jwt_secret="x" * 32))
    return msgspec.json.decode(msgspec.json.encode(app.openapi_schema.to_schema()))


def _documented() -> dict[str, set[str]]:
    """The fields each built-in task's row in docs/worker.md names."""
    text = (ROOT / "docs" / "worker.md").read_text()
    section = text.split("## Built-in tasks", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z]+)` \| ([^|]*) \|", section, re.M)
    return {task: set(re.findall(r"`([a-z_]+)`", fields)) for task, fields in rows}


def test_docs_list_every_field_of_every_payload():
    documented = _documented()
    declared = {
        task: set(model.__struct_fields__) if model is not None else set()
        for task, model in BUILTIN_PAYLOADS.items()
    }
    assert documented == declared


def test_no_handler_declares_a_payload_of_its_own():
    """Handlers decode through sluice.core.tasks; none reads payload fields by hand."""
    for path in sorted(Path(ROOT, "worker", "handlers").glob("*.py")):
        source = path.read_text()
        assert not re.search(r"payload\.get\(|payload\[", source), path.name
        assert "msgspec.Struct" not in source and "(Struct" not in source, path.name
