"""Token authentication with Litestar's JWT support (PyJWT underneath): the
`Authorization: Bearer` header, or the dashboard's session cookie holding the
same kind of token (see app.auth.session for the cookie and its CSRF check).

The accepted algorithms are an explicit list that must fit the configured key:
HMAC with a shared secret, RSA or EC with a public key, never a mix. So a token
with `alg: none`, or an HS256 token signed with the RSA public key as its
secret (key confusion), is refused before any signature is checked.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from litestar.connection import ASGIConnection
from litestar.exceptions import ImproperlyConfiguredException, NotAuthorizedException
from litestar.middleware.authentication import AuthenticationResult
from litestar.openapi.spec import Components
from litestar.security.jwt import BaseJWTAuth, JWTCookieAuth, Token

from sluice.auth.principal import Principal, highest_role
from sluice.auth.session import COOKIE, SessionAuthenticationMiddleware
from sluice.auth.settings import AuthSettings
from sluice.core.config import SettingsError
from sluice.core.jobs import DEFAULT_TENANT, TENANT_NAME

HMAC = ("HS256", "HS384", "HS512")
RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
EC = ("ES256", "ES384", "ES512")
EDDSA = ("EdDSA",)
REQUIRED_CLAIMS = ("exp", "iat", "sub")
MIN_SECRET_BYTES = 32
# The OpenAPI document answers without a token; so do the routes that say
# `exclude_from_auth=True` (health, readiness, metrics).
PUBLIC_PATHS = r"^/schema(/|$)"
ACCEPTED_TOKENS = 10_000


def refusal(cause: BaseException | None) -> str:
    """Why a token was refused, for the 401's message.

    PyJWT checks the signature before it reads any claim, so a message about a
    claim (expired, audience...) only ever answers the holder of a token this
    API signed or trusts: a forger learns that the signature does not verify,
    nothing more. Messages never echo the key, the accepted algorithms, issuer
    or audience."""
    match cause:
        case jwt.ExpiredSignatureError():
            return "The token has expired: get a new one."
        case jwt.InvalidSignatureError():
            return "The token's signature does not verify."
        case jwt.InvalidAlgorithmError():
            return "The token is signed with an algorithm this API does not accept."
        case jwt.InvalidAudienceError():
            return "The token's audience (aud) is not this API."
        case jwt.InvalidIssuerError():
            return "The token's issuer (iss) is not one this API accepts."
        case jwt.ImmatureSignatureError():
            return "The token is not valid yet (its nbf is in the future)."
        case jwt.MissingRequiredClaimError(claim=claim):
            return f"The token lacks the `{claim}` claim."
        case jwt.InvalidIssuedAtError():
            return "The token's `iat` claim is not a time (seconds since 1970)."
        case jwt.DecodeError() if "must be an integer" in str(cause):
            claim = str(cause).partition("(")[2].partition(")")[0] or "a time"
            return f"The token's `{claim}` claim is not a time (seconds since 1970)."
        case jwt.DecodeError():
            return "The token is malformed: not a signed JWT (header.payload.signature)."
        case msgspec.ValidationError():
            return f"The token's claims have the wrong types: {cause}."
        case ImproperlyConfiguredException() if "exp" in str(cause):
            return "The token has expired: get a new one."
        case ImproperlyConfiguredException() if "iat" in str(cause):
            return "The token was issued in the future (its `iat`): check the issuer's clock."
        case ImproperlyConfiguredException() if "sub" in str(cause):
            return "The token's `sub` claim is empty."
    return "The token is invalid."


class SluiceToken(Token):
    """A token verified against an explicit list of algorithms (`accepted`),
    refused with a message that says what was wrong (see `refusal`).

    Clients send the same token with every request: a token that passed every
    check (signature, claims, its tenant) is remembered, by the whole token
    string, until it expires (see SluiceAuthMiddleware). Nothing else is.
    """

    accepted: ClassVar[tuple[str, ...]] = ()
    remembered: ClassVar[dict[str, AuthenticationResult]]

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
        try:
            return super().decode_payload(
                encoded_token, secret, list(cls.accepted), issuer, audience, options
            )
        except jwt.InvalidTokenError:
            raise
        except jwt.PyJWTError as exc:
            # Key errors are not InvalidTokenError; Litestar turns only those into a 401.
            raise jwt.InvalidTokenError(str(exc)) from exc

    @classmethod
    def decode(cls, encoded_token: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().decode(encoded_token, *args, **kwargs)
        except NotAuthorizedException as exc:
            if exc.__cause__ is None:  # raised by the claim readers below, already precise
                raise
            raise NotAuthorizedException(refusal(exc.__cause__)) from exc.__cause__

    # Litestar reads these two claims with the helpers below; they are redefined
    # only to name the claim at fault.
    @classmethod
    def _require_claim(cls, payload: dict[str, Any], claim: str) -> Any:
        if claim not in payload:
            raise NotAuthorizedException(f"The token lacks the `{claim}` claim.")
        return payload[claim]

    @classmethod
    def _decode_datetime_claim(cls, payload: dict[str, Any], claim: str) -> datetime:
        value = cls._require_claim(payload, claim)
        try:
            if isinstance(value, bool | str):
                raise TypeError(value)
            return datetime.fromtimestamp(value, tz=UTC)
        except (OSError, OverflowError, TypeError, ValueError):
            raise NotAuthorizedException(
                f"The token's `{claim}` claim is not a time (seconds since 1970)."
            ) from None


def key_and_algorithms(settings: AuthSettings) -> tuple[str, tuple[str, ...]]:
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
    """The caller a verified token names; a 401 when its claims are unusable."""
    tenant = token.extras.get("tenant", DEFAULT_TENANT)
    if not TENANT_NAME.match(tenant):
        raise NotAuthorizedException(
            f"The token's `tenant` claim is not a tenant name: {TENANT_NAME.rule}."
        )
    return Principal(subject=token.sub, tenant=tenant, role=highest_role(token.extras.get("roles")))


class SluiceAuthMiddleware(SessionAuthenticationMiddleware):
    """Remembers the tokens that passed every check (see SluiceToken)."""

    async def authenticate_token(
        self, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> AuthenticationResult:
        remembered: dict[str, AuthenticationResult] = self.token_cls.remembered  # type: ignore[attr-defined]
        known = remembered.get(encoded_token)
        if known is not None and known.auth.exp.timestamp() > time.time():
            return AuthenticationResult(user=known.user, auth=copy.copy(known.auth))
        result = await super().authenticate_token(encoded_token, connection)
        if len(remembered) >= ACCEPTED_TOKENS:
            remembered.clear()
        remembered[encoded_token] = result
        return result


class SluiceAuth(JWTCookieAuth[Principal, Token]):
    """Litestar's JWT cookie auth. The OpenAPI document describes the Bearer
    header only: the cookie is the dashboard's, not part of the public API."""

    @property
    def openapi_components(self) -> Components:
        return BaseJWTAuth.openapi_components.fget(self)  # type: ignore[attr-defined]


def jwt_auth(settings: AuthSettings) -> SluiceAuth:
    """The authentication middleware configuration for these settings."""
    key, algorithms = key_and_algorithms(settings)
    token_cls = type("ConfiguredToken", (SluiceToken,), {"accepted": algorithms, "remembered": {}})
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
        authentication_middleware_class=SluiceAuthMiddleware,
        description="`Authorization: Bearer <JWT>` with claims sub, iat, exp, roles, tenant.",
    )


@functools.cache
def _middleware(settings: AuthSettings) -> SluiceAuthMiddleware:
    # Not in the request path: it only lends its token checks to sign_in.
    return jwt_auth(settings).middleware(app=None)  # type: ignore[arg-type]


async def sign_in(
    settings: AuthSettings, encoded_token: str, connection: ASGIConnection[Any, Any, Any, Any]
) -> tuple[Principal, Token]:
    """Verify a token exactly as the middleware verifies every request (the
    dashboard's sign-in checks a token before keeping it in the cookie).
    NotAuthorizedException when the token is not one the API accepts."""
    result = await _middleware(settings).authenticate_token(encoded_token, connection)
    return result.user, result.auth
