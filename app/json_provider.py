"""Flask's JSON, encoded by orjson: every API and OAuth response is JSON, and the standard
library's encoder (plus Flask's wrapping) was a tenth of a hot request's cost.

The types are Flask's: datetimes, dataclasses and anything else orjson does not know go
through ``DefaultJSONProvider.default`` as before; output is compact, UTF-8, keys in the
order given (sorted when ``sort_keys`` is set). Calls that pass ``json.dumps`` options get
the standard library.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response

_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


class OrjsonProvider(DefaultJSONProvider):
    def _encode(self, obj: Any, option: int = 0) -> bytes:
        option |= _OPTIONS | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
        return orjson.dumps(obj, default=self.default, option=option)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        if kwargs:
            return super().dumps(obj, **kwargs)
        return self._encode(obj).decode()

    @property
    def indented(self) -> bool:
        """Responses are indented, for people reading them (debug mode)."""
        return (self.compact is None and self._app.debug) or self.compact is False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        if self.indented:
            return super().response(*args, **kwargs)
        obj = self._prepare_response_obj(args, kwargs)
        return self._app.response_class(self.response_body(obj), mimetype=self.mimetype)  # type: ignore[arg-type]

    def response_body(self, obj: Any) -> bytes:
        """The body ``response`` sends for ``obj`` (compact)."""
        return self._encode(obj, orjson.OPT_APPEND_NEWLINE)
