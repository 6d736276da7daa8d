"""`sluice token` and `sluice api` as a user runs them."""

from __future__ import annotations

import httpx
import jwt
from click.testing import CliRunner

from sluice.cli import main
from tests.api.conftest import SECRET


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
    assert runner.invoke(main, ["token"], env={"SLUICE_JWT_SECRET": ""}).exit_code == 2


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
