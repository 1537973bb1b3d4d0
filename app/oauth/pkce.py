"""PKCE (RFC 7636), stricter than Authlib's defaults (RFC 9700 §2.1.1, §4.8).

``S256`` only: ``plain`` (and a challenge without a method, which RFC 7636 reads as
``plain``) is refused. Public clients must send a challenge. A verifier presented for a
code issued without a challenge is refused (downgrade), which Authlib already does.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge


class StrictCodeChallenge(CodeChallenge):
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant, redirect_uri):
        payload = grant.request.payload.data
        challenge = payload.get("code_challenge")
        method = payload.get("code_challenge_method")
        if grant.request.client.is_public and not challenge:
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256")
        if (challenge or method) and method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256")
        super().validate_code_challenge(grant, redirect_uri)
