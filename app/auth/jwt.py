"""Token authentication with Litestar's JWT support (PyJWT underneath): the
`Authorization: Bearer` header, or the dashboard's session cookie holding the
same kind of token (see app.auth.session for the cookie and its CSRF check).

The accepted algorithms are an explicit list that must fit the configured key:
HMAC with a shared secret, RSA or EC with a public key, never a mix. So a token
with `alg: none`, or an HS256 token signed with the RSA public key as its
secret (key confusion), is refused before any signature is checked.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.openapi.spec import Components
from litestar.security.jwt import BaseJWTAuth, JWTCookieAuth, Token

from sluice.auth.principal import DEFAULT_TENANT, TENANT_PATTERN, Principal, highest_role
from sluice.auth.session import COOKIE, SessionAuthenticationMiddleware
from sluice.core.config import SettingsError
from sluice.settings import ApiSettings

HMAC = ("HS256", "HS384", "HS512")
RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC = ("ES256", "ES384", "ES512")
EDDSA = ("EdDSA",)
REQUIRED_CLAIMS = ("exp", "iat", "sub")
MIN_SECRET_BYTES = 32
# The OpenAPI document answers without a token; so do the routes that say
# `exclude_from_auth=True` (health, readiness, metrics).
PUBLIC_PATHS = r"^/schema(/|$)"
VERIFIED_TOKENS = 10_000


class SluiceToken(Token):
    """A token verified against an explicit list of algorithms (`accepted`).

    Clients send the same token with every request: the claims of tokens that
    verified are remembered (by the whole token string, so any other token,
    however similar, is verified afresh) until they expire.
    """

    accepted: ClassVar[tuple[str, ...]] = ()
    verified: ClassVar[dict[str, dict[str, Any]]]

    @classmethod
    def decode_payload(
        cls,
        encoded_token: str,
        secret: str,
        algorithms: list[str],
        issuer: str | Sequence[str] | None = None,
        audience: str | Sequence[str] | None = None,
        options: Any = None,
    ) -> Any:
        claims = cls.verified.get(encoded_token)
        if claims is not None and claims["exp"] > time.time():
            return dict(claims)  # the caller pops and rewrites keys
        try:
            claims = super().decode_payload(
                encoded_token, secret, list(cls.accepted), issuer, audience, options
            )
        except jwt.PyJWTError as exc:
            # Key errors are not InvalidTokenError; Litestar turns only those into a 401.
            raise jwt.InvalidTokenError(str(exc)) from exc
        if len(cls.verified) >= VERIFIED_TOKENS:
            cls.verified.clear()
        cls.verified[encoded_token] = claims
        return dict(claims)


def key_and_algorithms(settings: ApiSettings) -> tuple[str, tuple[str, ...]]:
    """The verification key and the algorithms it may verify, or a SettingsError."""
    secret, public = settings.jwt_secret, settings.public_key_pem()
    if bool(secret) == bool(public):
        raise SettingsError(
            "Set exactly one of SLUICE_JWT_SECRET (HS256 tokens) and SLUICE_JWT_PUBLIC_KEY "
            "(RS256/ES256 tokens from an identity provider)."
        )
    if secret:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            # RFC 7518 3.2: an HMAC key at least as long as the hash; a short one can be
            # brute-forced offline from any token it signed.
            raise SettingsError(
                f"SLUICE_JWT_SECRET is {len(secret.encode())} bytes; use at least "
                f"{MIN_SECRET_BYTES} random bytes (openssl rand -hex 32)."
            )
        key, family, default = secret, HMAC, ("HS256",)
    else:
        assert public is not None
        try:
            loaded = load_pem_public_key(public.encode())
        except ValueError as exc:
            raise SettingsError(f"SLUICE_JWT_PUBLIC_KEY is not a PEM public key: {exc}") from None
        if isinstance(loaded, rsa.RSAPublicKey):
            family, default = RSA, ("RS256",)
        elif isinstance(loaded, ec.EllipticCurvePublicKey):
            family, default = EC, ("ES256",)
        elif isinstance(loaded, ed25519.Ed25519PublicKey):
            family, default = EDDSA, EDDSA
        else:
            raise SettingsError("SLUICE_JWT_PUBLIC_KEY: use an RSA, EC or Ed25519 key.")
        key = public
    algorithms = settings.jwt_algorithms or default
    wrong = [a for a in algorithms if a not in family]
    if wrong:
        raise SettingsError(
            f"SLUICE_JWT_ALGORITHMS: {', '.join(wrong)} cannot be verified with this key "
            f"(it fits {', '.join(family)})."
        )
    return key, tuple(algorithms)


async def principal_from_token(
    token: Token, _: ASGIConnection[Any, Any, Any, Any]
) -> Principal | None:
    """The caller a verified token names; None (401) when its claims are unusable."""
    tenant = token.extras.get("tenant", DEFAULT_TENANT)
    if not isinstance(tenant, str) or not TENANT_PATTERN.match(tenant):
        return None
    return Principal(subject=token.sub, tenant=tenant, role=highest_role(token.extras.get("roles")))


class SluiceAuth(JWTCookieAuth[Principal, Token]):
    """Litestar's JWT cookie auth. The OpenAPI document describes the Bearer
    header only: the cookie is the dashboard's, not part of the public API."""

    @property
    def openapi_components(self) -> Components:
        return BaseJWTAuth.openapi_components.fget(self)  # type: ignore[attr-defined]


def jwt_auth(settings: ApiSettings) -> SluiceAuth:
    """The authentication middleware configuration for these settings."""
    key, algorithms = key_and_algorithms(settings)
    token_cls = type("ConfiguredToken", (SluiceToken,), {"accepted": algorithms, "verified": {}})
    return SluiceAuth(
        token_secret=key,
        algorithm=algorithms[0],
        token_cls=token_cls,
        retrieve_user_handler=principal_from_token,
        require_claims=list(REQUIRED_CLAIMS),
        accepted_issuers=[settings.jwt_issuer] if settings.jwt_issuer else None,
        accepted_audiences=[settings.jwt_audience] if settings.jwt_audience else None,
        exclude=[PUBLIC_PATHS],
        key=COOKIE,
        samesite="strict",
        authentication_middleware_class=SessionAuthenticationMiddleware,
        description="`Authorization: Bearer <JWT>` with claims sub, iat, exp, roles, tenant.",
    )


@functools.cache
def _middleware(settings: ApiSettings) -> SessionAuthenticationMiddleware:
    # Not in the request path: it only lends its token checks to sign_in.
    return jwt_auth(settings).middleware(app=None)  # type: ignore[arg-type]


async def sign_in(
    settings: ApiSettings, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
) -> tuple[Principal, Token]:
    """Verify a token exactly as the middleware verifies every request (the
    dashboard's sign-in checks a token before keeping it in the cookie).
    NotAuthorizedException when the token is not one the API accepts."""
    result = await _middleware(settings).authenticate_token(encoded_token, connection)
    return result.user, result.auth
