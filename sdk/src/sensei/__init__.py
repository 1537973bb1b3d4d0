"""Sensei Auth's Python SDK.

```python
import os
from sensei import Sensei

client = Sensei(api_key=os.environ["SENSEI_API_KEY"])
key = client.api_keys.create(name="CI/CD Pipeline Key", scopes=["migrations:read"])
```

``sensei.resource.require_scopes`` protects a Flask view with Sensei's keys and tokens
(``pip install 'sensei-sdk[resource]'``).
"""

from sensei._client import UNSET, Sensei
from sensei._version import __version__
from sensei.errors import (
    APIConnectionError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SenseiError,
)
from sensei.oauth import ClientCredentials
from sensei.objects import ApiKey, AuditEvent, Deleted, Introspection, ServiceAccount

__all__ = [
    "UNSET",
    "APIConnectionError",
    "ApiKey",
    "AuditEvent",
    "AuthenticationError",
    "ClientCredentials",
    "Deleted",
    "Introspection",
    "InvalidRequestError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "Sensei",
    "SenseiError",
    "ServiceAccount",
    "__version__",
]
