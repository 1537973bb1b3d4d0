"""The access line (SPEC §9): what an operator reads in the server's log for every request.

The line is written without a LogRecord when the logging is ours; these tests hold it to
what ``JsonFormatter`` writes, and show that a deployment's own logging set-up still gets
real records.
"""

from __future__ import annotations

import io
import json
import logging
import re

import pytest

from app.observability import AccessLog, JsonFormatter, configure_logging


@pytest.fixture()
def captured():
    """The handler ``configure_logging`` installs, writing into a buffer for the test."""
    configure_logging()
    handler = logging.getLogger("sensei").handlers[0]
    buffer = io.StringIO()
    previous = handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        handler.setStream(previous)  # type: ignore[attr-defined]


FIELDS = {"request_id": "req_0123456789abcdef", "method": "GET", "path": '/v1/n\u00f6pe"\\x', "status": 404,
          "duration_ms": 0.37}


TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def without_ts(line: str) -> dict:
    return {k: v for k, v in json.loads(line).items() if k != "ts"}


def formatter_line(**fields) -> str:
    logger = logging.getLogger("sensei.access")
    record = logger.makeRecord(logger.name, logging.INFO, __name__, 0, "request", None, None, extra=fields)
    return JsonFormatter().format(record)


def test_the_direct_line_is_what_the_formatter_writes(captured):
    access = AccessLog()
    access.write(**FIELDS)
    access.write(**{**FIELDS, "status": None, "duration_ms": 12.0})
    first, second = captured.getvalue().splitlines()
    expected = formatter_line(**FIELDS)
    # Byte for byte after the timestamp (the clock is read by each): key order, spacing, escapes.
    assert first[first.index('"level"'):] == expected[expected.index('"level"'):]
    assert TIMESTAMP.match(json.loads(first)["ts"])
    assert without_ts(second) == without_ts(expected) | {"status": None, "duration_ms": 12.0}


def test_a_handler_added_by_the_deployment_receives_real_records(captured):
    received: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            received.append(record)

    extra = Collect()
    logging.getLogger("sensei.access").addHandler(extra)
    try:
        AccessLog().write(**FIELDS)
    finally:
        logging.getLogger("sensei.access").removeHandler(extra)
    assert len(received) == 1 and received[0].path == FIELDS["path"] and received[0].status == 404  # type: ignore[attr-defined]
    assert without_ts(captured.getvalue()) == without_ts(formatter_line(**FIELDS))  # ours still writes


def test_no_line_when_the_access_logger_is_turned_down(captured):
    logger = logging.getLogger("sensei.access")
    logger.setLevel(logging.WARNING)
    try:
        AccessLog().write(**FIELDS)
    finally:
        logger.setLevel(logging.NOTSET)
    assert captured.getvalue() == ""


def test_ids_drawn_after_a_fork_differ_from_the_parents():
    """Workers are forked: a child must never replay the buffered randomness of its parent."""
    import os

    from app.models.base import new_id

    new_id("log")  # the parent's buffer is filled
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids and leave at once
        os.write(write_end, " ".join(new_id("log") for _ in range(5)).encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = pipe.read().split()
    parent = [new_id("log") for _ in range(5)]
    assert len(child) == 5 and not set(child) & set(parent)
