"""`sluice token` and `sluice api` as a user runs them."""

from __future__ import annotations

import httpx
import jwt
from click.testing import CliRunner

from sluice.auth.principal import Role
from sluice.cli import main
from sluice.core.embedded import free_port
from tests.api.conftest import SECRET, bearer


def test_token_mints_a_verifiable_token():
    result = CliRunner().invoke(
        main,
        ["token", "--role", "operator", "--tenant", "acme", "--ttl", "2h"],
        env={"SLUICE_JWT_SECRET": SECRET},
    )
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["operator"] and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == 7200


def test_token_refuses_bad_input():
    runner = CliRunner()
    assert (
        runner.invoke(main, ["token", "--ttl", "soon"], env={"SLUICE_JWT_SECRET": SECRET}).exit_code
        == 2
    )
    assert (
        runner.invoke(
            main, ["token", "--tenant", "no spaces"], env={"SLUICE_JWT_SECRET": SECRET}
        ).exit_code
        == 2
    )


def test_token_without_a_secret_says_where_it_looks(tmp_path):
    result = CliRunner().invoke(
        main, ["token"], env={"SLUICE_JWT_SECRET": "", "SLUICE_DATA_DIR": str(tmp_path)}
    )
    assert result.exit_code == 2
    assert "SLUICE_JWT_SECRET" in result.output and str(tmp_path / "jwt-secret") in result.output


def test_token_uses_the_secret_sluice_up_keeps(tmp_path):
    (tmp_path / "jwt-secret").write_text(SECRET + "\n")
    result = CliRunner().invoke(
        main,
        ["token", "--role", "viewer", "--tenant", "acme", "--ttl", "1h"],
        env={"SLUICE_JWT_SECRET": "", "SLUICE_DATA_DIR": str(tmp_path)},
    )
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["viewer"] and claims["tenant"] == "acme"


def test_api_refuses_to_start_without_a_key(database_url):
    result = CliRunner().invoke(
        main,
        ["api", "--database-url", database_url],
        env={"SLUICE_JWT_SECRET": "", "SLUICE_JWT_PUBLIC_KEY": ""},
    )
    assert result.exit_code == 2 and "SLUICE_JWT_SECRET" in result.output


def test_sluice_api_serves_the_api(api_server):
    token = (
        CliRunner()
        .invoke(main, ["token", "--role", "submitter"], env={"SLUICE_JWT_SECRET": SECRET})
        .output.strip()
    )
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api_server, headers=headers) as client:
        assert client.get("/ready").json()["status"] == "ready"
        job = client.post("/api/v1/jobs", json={"task": "noop"})
        assert job.status_code == 201
        assert client.get(f"/api/v1/jobs/{job.json()['id']}").json()["state"] == "ready"
        assert client.get("/schema/openapi.json").json()["info"]["title"] == "Sluice"


def cli(api_server: str, *args: str):
    """A CLI command against `api_server` with an admin token."""
    token = bearer(Role.admin)["Authorization"].removeprefix("Bearer ")
    return CliRunner().invoke(
        main, list(args), env={"SLUICE_API_URL": api_server, "SLUICE_TOKEN": token}
    )


def test_lists_have_headers_and_say_when_they_are_empty(api_server):
    empty = cli(api_server, "runs", "list")
    assert empty.exit_code == 0 and empty.output == "No runs yet.\n"
    assert cli(api_server, "runs", "list", "--state", "failed").output == "No failed runs.\n"
    assert cli(api_server, "dlq", "list").output == "The dead-letter queue is empty.\n"
    httpx.post(
        f"{api_server}/api/v1/runs",
        json={"definition": {"nodes": [{"id": "a", "task": "noop"}]}},
        headers=bearer(Role.admin),
    ).raise_for_status()
    header, row = cli(api_server, "runs", "list").output.splitlines()
    assert header.split() == [
        "RUN", "DAG", "STATE", "NODES", "SUCCEEDED", "FAILED", "CANCELLED", "CREATED"
    ]  # fmt: skip
    assert row.split()[:7] == ["1", "(inline)", "running", "1", "0", "0", "0"]


def test_dead_letters_show_one_line_each_with_their_error(api_server, database_url):
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO sluice.jobs (task, max_attempts) VALUES ('noop', 1)")
        conn.execute("SELECT sluice.job_claim('w', '{default}', 1, '30 s')")
        conn.execute(
            "SELECT sluice.job_fail_many('w', '{1}', '{1}', "
            "'{\"Traceback (most recent call last):\n  File x\nValueError: bad\"}', '{true}')"
        )
    lines = cli(api_server, "dlq", "list").output.splitlines()
    assert lines[0].split() == ["JOB", "TASK", "QUEUE", "ATTEMPTS", "FAILED", "AT", "ERROR"]
    assert len(lines) == 2 and lines[1].split()[:4] == ["1", "noop", "default", "1"]
    assert lines[1].endswith("Traceback (most recent call last):…")


def test_an_error_is_one_line_per_problem(api_server, tmp_path):
    cycle = tmp_path / "cycle.yaml"
    cycle.write_text(
        "nodes:\n"
        "  - {id: a, task: noop, depends_on: [b]}\n"
        "  - {id: b, task: noop, depends_on: [a]}\n"
    )
    result = cli(api_server, "submit", str(cycle))
    assert result.exit_code == 1
    assert result.output.count("cycle") == 1, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert "(422)" in result.output


def test_an_unreachable_api_is_named_without_http_0():
    result = CliRunner().invoke(
        main,
        ["runs", "list"],
        env={"SLUICE_API_URL": f"http://127.0.0.1:{free_port()}", "SLUICE_TOKEN": "x"},
    )
    assert result.exit_code == 1
    assert "cannot reach the API" in result.output and "HTTP 0" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


def test_the_cli_has_no_bench_command():
    """The product does not import its load test: `python -m bench` runs it."""
    assert "bench" not in CliRunner().invoke(main, ["--help"]).output
    assert CliRunner().invoke(main, ["bench"]).exit_code == 2
