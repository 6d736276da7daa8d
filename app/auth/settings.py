"""How tokens are verified: the key, the accepted algorithms, issuer and audience."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sluice.core.config import CoreSettings, SettingsError, parse_list, setting


@dataclasses.dataclass(frozen=True)
class AuthSettings(CoreSettings):
    """The token settings of the API process (see sluice.auth.jwt)."""

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

    def public_key_pem(self) -> str | None:
        """The public key's PEM text, read from its file when the setting is a path."""
        value = (self.jwt_public_key or "").strip()
        if not value or value.startswith("-----BEGIN"):
            return value or None
        try:
            return Path(value).read_text()
        except OSError as exc:
            raise SettingsError(f"SLUICE_JWT_PUBLIC_KEY: cannot read {value}: {exc}") from None
