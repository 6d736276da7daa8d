"""Settings of the REST API process (`sluice api`), read from `SLUICE_*` variables."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sluice.core.config import CoreSettings, SettingsError, parse_bool, parse_list, setting

MIB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ApiSettings(CoreSettings):
    """Everything `create_app` needs; the defaults suit local use."""

    host: str = setting("SLUICE_API_HOST", "127.0.0.1", "Address `sluice api` listens on.")
    port: int = setting("SLUICE_API_PORT", 8000, "Port `sluice api` listens on.", int)
    pool_size: int = setting(
        "SLUICE_API_POOL_SIZE", 10, "Most database connections the API process holds open.", int
    )
    jwt_secret: str | None = setting(
        "SLUICE_JWT_SECRET",
        None,
        "Shared secret for HS256 tokens. Set this or SLUICE_JWT_PUBLIC_KEY, not both.",
    )
    jwt_public_key: str | None = setting(
        "SLUICE_JWT_PUBLIC_KEY",
        None,
        "PEM public key (the text, or the path of a file holding it) that verifies RS256 or "
        "ES256 tokens from an identity provider.",
    )
    jwt_algorithms: tuple[str, ...] = setting(
        "SLUICE_JWT_ALGORITHMS",
        (),
        "Accepted token algorithms, comma-separated. Default: HS256 with a secret; RS256 for "
        "an RSA key, ES256 for an EC key. Algorithms that do not fit the key are refused.",
        parse_list,
    )
    jwt_issuer: str | None = setting(
        "SLUICE_JWT_ISSUER", None, "When set, tokens must carry this `iss`."
    )
    jwt_audience: str | None = setting(
        "SLUICE_JWT_AUDIENCE", None, "When set, tokens must carry this `aud`."
    )
    max_body_bytes: int = setting(
        "SLUICE_MAX_BODY_BYTES", MIB, "Largest request body accepted (413 past it).", int
    )
    max_batch_body_bytes: int = setting(
        "SLUICE_MAX_BATCH_BODY_BYTES",
        32 * MIB,
        "Largest body of a batch submission or a DAG definition (POST /api/v1/jobs/batch, "
        "PUT /api/v1/dags/{name}, POST /api/v1/runs; 413 past it).",
        int,
    )
    max_batch_jobs: int = setting(
        "SLUICE_MAX_BATCH_JOBS", 50_000, "Most jobs in one batch submission.", int
    )
    allow_shell: bool = setting(
        "SLUICE_ALLOW_SHELL",
        False,
        "Accept `shell` tasks (from admins only). Off by default: a shell task runs any "
        "command on the worker host.",
        parse_bool,
    )

    def public_key_pem(self) -> str | None:
        """The public key's PEM text, read from its file when the setting is a path."""
        value = (self.jwt_public_key or "").strip()
        if not value or value.startswith("-----BEGIN"):
            return value or None
        try:
            return Path(value).read_text()
        except OSError as exc:
            raise SettingsError(f"SLUICE_JWT_PUBLIC_KEY: cannot read {value}: {exc}") from None
