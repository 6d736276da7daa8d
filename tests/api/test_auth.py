"""Authentication and authorisation: the role x endpoint matrix, tenant isolation,
and tokens that must be refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from sluice.auth.jwt import key_and_algorithms
from sluice.auth.principal import Role
from sluice.auth.tokens import mint
from sluice.core.config import SettingsError
from sluice.http.settings import ApiSettings
from tests.api.conftest import SECRET, bearer

ROLES = [None, Role.viewer, Role.submitter, Role.operator, Role.admin]

# (method, path, body, least role). Ids that do not exist are fine: an allowed call
# may answer 404 or 409, a denied one must answer 403 before looking.
MATRIX = [
    ("GET", "/api/v1/jobs", None, Role.viewer),
    ("GET", "/api/v1/jobs/1", None, Role.viewer),
    ("GET", "/api/v1/jobs/throughput", None, Role.viewer),
    ("GET", "/api/v1/jobs/wait-times", None, Role.viewer),
    ("POST", "/api/v1/jobs", {"task": "noop"}, Role.submitter),
    ("POST", "/api/v1/jobs/batch", {"jobs": [{"task": "noop"}]}, Role.submitter),
    ("POST", "/api/v1/jobs/1/cancel", None, Role.submitter),
    ("POST", "/api/v1/jobs/1/retry", None, Role.operator),
    ("GET", "/api/v1/dags", None, Role.viewer),
    ("GET", "/api/v1/dags/etl", None, Role.viewer),
    ("PUT", "/api/v1/dags/etl", {"nodes": [{"id": "a", "task": "noop"}]}, Role.submitter),
    ("DELETE", "/api/v1/dags/etl", None, Role.operator),
    ("POST", "/api/v1/dags/etl/runs", {}, Role.submitter),
    ("GET", "/api/v1/runs", None, Role.viewer),
    ("GET", "/api/v1/runs/1", None, Role.viewer),
    ("GET", "/api/v1/runs/1/layout", None, Role.viewer),
    (
        "POST",
        "/api/v1/runs",
        {"definition": {"nodes": [{"id": "a", "task": "noop"}]}},
        Role.submitter,
    ),
    ("POST", "/api/v1/runs/1/cancel", None, Role.submitter),
    ("POST", "/api/v1/runs/1/retry", None, Role.operator),
    ("POST", "/api/v1/runs/1/rerun", {"from": "etl"}, Role.operator),
    ("GET", "/api/v1/runs/1/nodes/etl/result", None, Role.viewer),
    ("POST", "/api/v1/runs/1/nodes/etl/signal", None, Role.operator),
    (
        "POST",
        "/api/v1/dags/etl/backfill",
        {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z"},
        Role.operator,
    ),
    ("GET", "/api/v1/dlq", None, Role.viewer),
    ("GET", "/api/v1/dlq/size", None, Role.viewer),
    ("POST", "/api/v1/dlq/1/retry", None, Role.operator),
    ("POST", "/api/v1/dlq/1/discard", None, Role.operator),
    ("GET", "/api/v1/queues", None, Role.viewer),
    ("GET", "/api/v1/queues/default", None, Role.viewer),
    ("POST", "/api/v1/queues/default/pause", None, Role.operator),
    ("POST", "/api/v1/queues/default/resume", None, Role.operator),
    ("PUT", "/api/v1/queues/default/concurrency", {"limit": 2}, Role.operator),
    ("GET", "/api/v1/schedules", None, Role.viewer),
    ("GET", "/api/v1/schedules/1", None, Role.viewer),
    ("GET", "/api/v1/schedules/1/upcoming", None, Role.viewer),
    (
        "POST",
        "/api/v1/schedules",
        {"name": "s", "cron": "@daily", "job": {"task": "noop"}},
        Role.operator,
    ),
    ("PATCH", "/api/v1/schedules/1", {"enabled": False}, Role.operator),
    ("DELETE", "/api/v1/schedules/1", None, Role.operator),
    ("GET", "/api/v1/workers", None, Role.viewer),
    ("POST", "/api/v1/workers/w-1/pause", None, Role.admin),
    ("POST", "/api/v1/workers/w-1/resume", None, Role.admin),
]


def test_the_matrix_covers_every_api_operation(api_settings):
    from sluice.main import create_app

    schema = create_app(api_settings).openapi_schema.to_schema()
    operations = {
        (m.upper(), p) for p, ops in schema["paths"].items() for m in ops if p.startswith("/api/")
    }
    templated = {
        (
            m,
            p.replace("/1", "/{x}")
            .replace("/etl", "/{x}")
            .replace("/default", "/{x}")
            .replace("/w-1", "/{x}"),
        )
        for m, p, _, _ in MATRIX
    }
    assert {(m, _generic(p)) for m, p in operations} == templated


def _generic(path: str) -> str:
    import re

    return re.sub(r"\{[^}]+\}", "{x}", path)


@pytest.mark.parametrize(
    ("method", "path", "body", "least"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX]
)
async def test_role_matrix(client, method, path, body, least):
    anonymous = await client.request(method, path, json=body)
    assert anonymous.status_code == 401
    for role in ROLES:
        r = await client.request(method, path, json=body, headers=bearer(role))
        if role is not None and role >= least:
            assert r.status_code not in (401, 403), (role, r.status_code, r.text)
        else:
            assert r.status_code == 403, (role, r.status_code, r.text)
            assert r.json()["error"] == "forbidden"


async def test_another_tenants_job_is_a_404(client):
    acme = bearer("operator", tenant="acme")
    job = (await client.post("/api/v1/jobs", json={"task": "noop"}, headers=acme)).json()
    other = bearer("operator", tenant="globex")
    for method, path in [
        ("GET", f"/api/v1/jobs/{job['id']}"),
        ("POST", f"/api/v1/jobs/{job['id']}/cancel"),
        ("POST", f"/api/v1/jobs/{job['id']}/retry"),
    ]:
        assert (await client.request(method, path, headers=other)).status_code == 404
    assert (await client.get("/api/v1/jobs", headers=other)).json()["items"] == []
    assert (await client.get(f"/api/v1/jobs/{job['id']}", headers=acme)).status_code == 200
    admin = bearer("admin", tenant="globex")
    assert (await client.get(f"/api/v1/jobs/{job['id']}", headers=admin)).status_code == 200
    assert len((await client.get("/api/v1/jobs", headers=admin)).json()["items"]) == 1
    only = await client.get("/api/v1/jobs", params={"tenant": "globex"}, headers=admin)
    assert only.json()["items"] == []


def _token(payload: dict, key: object = SECRET, algorithm: str = "HS256") -> dict[str, str]:
    return {"Authorization": f"Bearer {jwt.encode(payload, key, algorithm=algorithm)}"}


def _claims(**overrides) -> dict:
    now = datetime.now(UTC)
    return {
        "sub": "alice",
        "iat": now,
        # Tokens of REFUSALS are made at collection: they must outlive a slow session.
        "exp": now + timedelta(hours=6),
        "roles": ["admin"],
        **overrides,
    }


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(
            _token(
                _claims(
                    exp=datetime.now(UTC) - timedelta(seconds=5),
                    iat=datetime.now(UTC) - timedelta(minutes=5),
                )
            ),
            id="expired",
        ),
        pytest.param(_token(_claims(), key="not-the-secret-but-as-long-as-one"), id="forged"),
        pytest.param(_token(_claims(), key=None, algorithm="none"), id="alg-none"),
        pytest.param(_token({k: v for k, v in _claims().items() if k != "exp"}), id="no-exp"),
        pytest.param(_token({k: v for k, v in _claims().items() if k != "iat"}), id="no-iat"),
        pytest.param(_token({k: v for k, v in _claims().items() if k != "sub"}), id="no-sub"),
        pytest.param(_token(_claims(tenant="bad tenant")), id="bad-tenant"),
        pytest.param(_token(_claims(), algorithm="HS512"), id="algorithm-not-listed"),
        pytest.param({"Authorization": "Bearer not.a.token"}, id="garbage"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="not-bearer"),
    ],
)
async def test_bad_tokens_are_401(client, headers):
    r = await client.get("/api/v1/jobs", headers=headers)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


async def test_a_token_without_a_role_is_403(client):
    r = await client.get("/api/v1/jobs", headers=_token(_claims(roles=["superuser"])))
    assert r.status_code == 403


def _rsa_pems() -> tuple[bytes, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return private, public.decode()


async def test_rs256_tokens_and_key_confusion(make_client, tmp_path):
    private, public = _rsa_pems()
    key_file = tmp_path / "idp.pem"
    key_file.write_text(public)
    client = await make_client(
        jwt_secret=None,
        jwt_public_key=str(key_file),
        jwt_issuer="https://idp.example",
        jwt_audience="sluice",
    )
    good = _claims(iss="https://idp.example", aud="sluice")
    ok = await client.get("/api/v1/jobs", headers=_token(good, private, "RS256"))
    assert ok.status_code == 200, ok.text
    wrong_aud = await client.get(
        "/api/v1/jobs", headers=_token({**good, "aud": "other"}, private, "RS256")
    )
    assert wrong_aud.status_code == 401
    wrong_iss = await client.get(
        "/api/v1/jobs", headers=_token({**good, "iss": "https://evil"}, private, "RS256")
    )
    assert wrong_iss.status_code == 401

    # Key confusion: an HS256 token whose HMAC key is the RSA public key (PyJWT will not
    # make one, so sign it by hand).
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(
        json.dumps(
            {**good, "iat": int(good["iat"].timestamp()), "exp": int(good["exp"].timestamp())}
        ).encode()
    )
    signature = b64(hmac.new(public.encode(), f"{header}.{body}".encode(), hashlib.sha256).digest())
    confused = await client.get(
        "/api/v1/jobs", headers={"Authorization": f"Bearer {header}.{body}.{signature}"}
    )
    assert confused.status_code == 401


async def test_es256_tokens(make_client):
    key = ec.generate_private_key(ec.SECP256R1())
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    client = await make_client(jwt_secret=None, jwt_public_key=public)
    assert (
        await client.get("/api/v1/jobs", headers=_token(_claims(), key, "ES256"))
    ).status_code == 200


def test_keys_and_algorithms_must_fit():
    _, public = _rsa_pems()
    with pytest.raises(SettingsError, match="exactly one"):
        key_and_algorithms(ApiSettings(jwt_secret=SECRET, jwt_public_key=public))
    with pytest.raises(SettingsError, match="exactly one"):
        key_and_algorithms(ApiSettings())
    with pytest.raises(SettingsError, match="RS256 cannot be verified"):
        key_and_algorithms(ApiSettings(jwt_secret=SECRET, jwt_algorithms=("RS256",)))
    with pytest.raises(SettingsError, match="HS256 cannot be verified"):
        key_and_algorithms(ApiSettings(jwt_public_key=public, jwt_algorithms=("RS256", "HS256")))
    assert key_and_algorithms(ApiSettings(jwt_public_key=public))[1] == ("RS256",)


def test_minted_tokens_carry_role_and_tenant():
    token = mint(SECRET, Role.operator, tenant="acme", ttl=timedelta(minutes=1))
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["operator"] and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == 60


async def test_a_remembered_token_is_refused_once_it_expires(client):
    # Long enough for the first request to be answered on a loaded machine.
    headers = _token(_claims(exp=datetime.now(UTC) + timedelta(seconds=5)))
    assert (await client.get("/api/v1/jobs", headers=headers)).status_code == 200
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while (r := await client.get("/api/v1/jobs", headers=headers)).status_code == 200:
        assert datetime.now(UTC) < deadline, "an expired token was still accepted"
        await asyncio.sleep(0.2)  # waiting for the clock to pass `exp`, not for another task
    assert r.status_code == 401


def test_a_short_hmac_secret_is_refused_at_start():
    with pytest.raises(SettingsError, match="at least 32"):
        key_and_algorithms(ApiSettings(jwt_secret="too-short"))


# (token, what the 401 says). Claims are judged only once the signature verified,
# so a forged token hears about its signature and nothing else.
REFUSALS = [
    pytest.param({}, "No token", id="missing"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, "must be `Bearer <JWT>`", id="basic"),
    pytest.param({"Authorization": "Bearer not.a.token"}, "malformed", id="malformed"),
    pytest.param({"Authorization": "Bearer "}, "malformed", id="empty"),
    pytest.param(
        _token(
            _claims(
                exp=datetime.now(UTC) - timedelta(seconds=5),
                iat=datetime.now(UTC) - timedelta(minutes=5),
            )
        ),
        "has expired",
        id="expired",
    ),
    pytest.param(
        _token(_claims(), key="not-the-secret-but-as-long-as-one"), "signature", id="forged"
    ),
    pytest.param(
        _token(
            _claims(exp=datetime.now(UTC) - timedelta(hours=1)),
            key="not-the-secret-but-as-long-as-one",
        ),
        "signature",
        id="forged-and-expired",
    ),
    pytest.param(_token(_claims(), key=None, algorithm="none"), "algorithm", id="alg-none"),
    pytest.param(_token(_claims(), algorithm="HS512"), "algorithm", id="algorithm-not-listed"),
    pytest.param(
        _token({k: v for k, v in _claims().items() if k != "sub"}), "`sub` claim", id="no-sub"
    ),
    pytest.param(
        _token({k: v for k, v in _claims().items() if k != "exp"}), "`exp` claim", id="no-exp"
    ),
    pytest.param(_token(_claims(exp="tomorrow")), "`exp` claim is not a time", id="exp-word"),
    pytest.param(_token(_claims(iat="now")), "`iat` claim is not a time", id="iat-word"),
    pytest.param(
        _token(_claims(nbf=datetime.now(UTC) + timedelta(hours=1))), "not valid yet", id="nbf"
    ),
    pytest.param(_token(_claims(tenant="bad tenant")), "`tenant` claim", id="bad-tenant"),
]


@pytest.mark.parametrize(("headers", "says"), REFUSALS)
async def test_401_bodies_say_what_was_wrong(client, headers, says):
    r = await client.get("/api/v1/jobs", headers=headers)
    assert r.status_code == 401, r.text
    body = r.json()
    assert body["error"] == "unauthorized" and says in body["message"], body
    assert r.headers["www-authenticate"] == "Bearer"
    if "signature" in says:
        assert "expired" not in body["message"]
    assert SECRET not in r.text and "HS256" not in r.text


async def test_audience_and_issuer_refusals_name_the_claim_not_the_value(make_client):
    private, public = _rsa_pems()
    client = await make_client(
        jwt_secret=None,
        jwt_public_key=public,
        jwt_issuer="https://idp.example",
        jwt_audience="sluice-prod",
    )
    good = _claims(iss="https://idp.example", aud="sluice-prod")
    for claims, says in [
        ({**good, "aud": "other"}, "audience (aud)"),
        ({**good, "iss": "https://evil"}, "issuer (iss)"),
    ]:
        r = await client.get("/api/v1/jobs", headers=_token(claims, private, "RS256"))
        assert r.status_code == 401 and says in r.json()["message"], r.text
        assert "sluice-prod" not in r.text and "idp.example" not in r.text


async def test_a_signed_token_whose_exp_is_a_string_is_refused_every_time(client):
    """Issue 11 item 7: the old cache kept it after the first 401, then answered 500."""
    headers = _token(_claims(exp=str(int((datetime.now(UTC) + timedelta(hours=1)).timestamp()))))
    answers = [await client.get("/api/v1/jobs", headers=headers) for _ in range(3)]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert all("`exp` claim is not a time" in r.json()["message"] for r in answers)
