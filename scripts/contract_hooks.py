"""Rules of docs/openapi.yaml that JSON Schema cannot state, kept by schemathesis's generator.

scripts/contract.sh loads this module (SCHEMATHESIS_HOOKS). Each filter skips only the generated
cases that fall in the gap between the schema and a rule its descriptions state, valid and
invalid cases alike; every check still runs on everything else.
"""

import time

import schemathesis

# Snowflake ids: milliseconds since 2024-01-01T00:00:00Z above 22 bits of node and sequence.
EPOCH_MS = 1_704_067_200_000
# The stream refuses a resume id more than this far ahead of its clock (a day, as
# services/src/stream_messages.rs's FUTURE_SLACK_MS).
FUTURE_SLACK_MS = 24 * 60 * 60 * 1000
# conversation_id and from: 255 bytes of UTF-8; the schema's maxLength counts characters.
MAX_NAME_BYTES = 255


def _from_the_future(value):
    """A resume id whose time is past the stream's slack: a 400 the schema cannot foresee."""
    try:
        msg_id = int(str(value).strip())
    except ValueError:
        return False
    return (msg_id >> 22) + EPOCH_MS > time.time() * 1000 + FUTURE_SLACK_MS


def _bytes_over_chars_within(value):
    """A name the schema admits by characters that the server refuses by bytes."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_NAME_BYTES
        and len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES
    )


def _names(body):
    if isinstance(body, dict):
        for key in ("conversation_id", "from", "title"):
            yield body.get(key)
        messages = body.get("messages")
        if isinstance(messages, list):
            for message in messages:
                yield from _names(message)
        members = body.get("members")
        if isinstance(members, list):
            yield from members


@schemathesis.hook
def filter_query(ctx, query):
    return not (
        isinstance(query, dict)
        and (
            _from_the_future(query.get("since_msg_id", ""))
            or _bytes_over_chars_within(query.get("member"))
        )
    )


@schemathesis.hook
def filter_path_parameters(ctx, path_parameters):
    return not (
        isinstance(path_parameters, dict)
        and any(_bytes_over_chars_within(value) for value in path_parameters.values())
    )


@schemathesis.hook
def filter_headers(ctx, headers):
    return not (isinstance(headers, dict) and _from_the_future(headers.get("Last-Event-ID", "")))


@schemathesis.hook
def filter_body(ctx, body):
    return not any(_bytes_over_chars_within(name) for name in _names(body))
