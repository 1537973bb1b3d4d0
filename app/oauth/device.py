"""The device authorization grant (RFC 8628) on Authlib: the endpoint a device asks at, and
the grant it polls with. Storage and the rules of codes are ``services/devices.py``; the
page where a person enters the code is ``web/device.py``."""

from __future__ import annotations

from authlib.common.urls import add_params_to_uri
from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import (
    AuthorizationPendingError,
    ExpiredTokenError,
    SlowDownError,
)
from authlib.oauth2.rfc8628 import (
    DeviceAuthorizationEndpoint as AuthlibDeviceAuthorizationEndpoint,
)
from authlib.oauth2.rfc8628 import DeviceCodeGrant as AuthlibDeviceCodeGrant
from flask import current_app

from app.models import DeviceAuthorization, User
from app.oauth.grants import ALL_CLIENT_AUTH, active_user
from app.services import devices
from app.services.clients import DEVICE_CODE

__all__ = ["DEVICE_CODE", "DeviceAuthorizationEndpoint", "DeviceCodeGrant"]


class DeviceAuthorizationEndpoint(AuthlibDeviceAuthorizationEndpoint):
    """``POST /oauth/device_authorization``: for clients registered with the device_code grant.

    Authlib's steps, with the scope bounded by the client's and the user code chosen when
    stored (unique among the stored ones, ``services/devices.py``)."""

    CLIENT_AUTH_METHODS = ALL_CLIENT_AUTH
    EXPIRES_IN = devices.EXPIRES_IN
    INTERVAL = devices.INTERVAL

    def get_verification_uri(self) -> str:
        return f"{current_app.config['SETTINGS'].ISSUER}/device"

    def create_endpoint_response(self, request):
        client = self.authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE):
            raise UnauthorizedClientError("This client is not registered for the device_code grant.")
        self.server.validate_requested_scope(request.payload.scope)
        scope = client.get_allowed_scope(request.payload.scope)
        if scope is None:
            raise InvalidScopeError("The client may not request this scope.")
        device_code = self.generate_device_code()
        row = devices.start(client_id=client.client_id, org_id=client.org_id, scope=scope, device_code=device_code)
        uri = self.get_verification_uri()
        user_code = devices.shown(row.user_code)
        return 200, {
            "device_code": device_code,
            "user_code": user_code,
            "verification_uri": uri,
            "verification_uri_complete": add_params_to_uri(uri, [("user_code", user_code)]),
            "expires_in": self.EXPIRES_IN,
            "interval": self.INTERVAL,
        }, default_json_headers


class DeviceCodeGrant(AuthlibDeviceCodeGrant):
    """Polling: ``authorization_pending`` until the person decides, ``slow_down`` when polled
    sooner than the interval, ``access_denied``, ``expired_token``; the approved device code
    is redeemed once (conditional UPDATE), every later poll ``invalid_grant``."""

    TOKEN_ENDPOINT_AUTH_METHODS = ALL_CLIENT_AUTH

    def query_device_credential(self, device_code: str) -> DeviceAuthorization | None:
        return devices.by_device_code(device_code)

    def validate_device_credential(self, credential: DeviceAuthorization) -> User:
        if credential.used_at is not None:
            raise InvalidGrantError("The device code has already been used.")
        if credential.is_expired():
            raise ExpiredTokenError()
        if credential.decision == "denied":
            raise AccessDeniedError()
        if credential.decision != "approved":
            if devices.polled_too_soon(credential):
                raise SlowDownError()
            raise AuthorizationPendingError()
        user = active_user(credential.user_id)
        if user is None:
            raise InvalidGrantError("The user who approved this device no longer exists.")
        if not devices.claim(credential):
            raise InvalidGrantError("The device code has already been used.")
        return user
