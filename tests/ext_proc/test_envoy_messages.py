"""The ProcessingResponse builders, read back as Envoy reads them.

What matters to Envoy: which oneof a reply sets (an unmodified reply must still set it, or
Envoy resets the stream), header values in ``raw_value`` with an overwrite action, a body
replaced or cleared, the per-request mode override for SSE, and dynamic metadata.
"""

from __future__ import annotations

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from hypothesis import given, settings
from hypothesis import strategies as st
from infery_proto.wire import ROUTE_HEADER

from ext_proc import envoy_messages as msg

OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _set(mutation: ep.HeaderMutation) -> list[tuple[str, bytes]]:
    for option in mutation.set_headers:
        assert option.append_action == OVERWRITE and not option.header.value  # raw_value only
    return [(o.header.key, o.header.raw_value) for o in mutation.set_headers]


def _round_trip(resp: ep.ProcessingResponse) -> ep.ProcessingResponse:
    """What Envoy receives: the reply serialized and parsed again."""
    return ep.ProcessingResponse.FromString(resp.SerializeToString())


def test_header_map_reads_raw_values_as_latin1_and_falls_back_to_value():
    headers = ep.HttpHeaders(
        headers=base_pb2.HeaderMap(
            headers=[
                base_pb2.HeaderValue(key=":path", raw_value=b"/v1/chat/completions"),
                base_pb2.HeaderValue(key="authorization", value="Bearer old-style"),
                base_pb2.HeaderValue(key="x-latin", raw_value="café".encode("latin-1")),
                base_pb2.HeaderValue(key="cookie", raw_value=b"not wanted"),
            ]
        )
    )
    got = msg.header_map(headers, frozenset({":path", "authorization", "x-latin"}))
    assert got == {":path": "/v1/chat/completions", "authorization": "Bearer old-style", "x-latin": "café"}


def test_an_immediate_answer_is_json_with_its_headers():
    resp = _round_trip(msg.immediate(429, b'{"error":{}}', [("retry-after", "3"), ("x-request-id", "r")]))
    assert resp.WhichOneof("response") == "immediate_response"
    answer = resp.immediate_response
    assert answer.status.code == 429 and answer.body == b'{"error":{}}'
    assert _set(answer.headers) == [
        ("content-type", b"application/json"),
        ("retry-after", b"3"),
        ("x-request-id", b"r"),
    ]


def test_unmodified_replies_still_set_their_oneof():
    assert _round_trip(msg.request_headers()).WhichOneof("response") == "request_headers"
    assert _round_trip(msg.response_headers()).WhichOneof("response") == "response_headers"
    assert _round_trip(msg.response_body(None)).WhichOneof("response") == "response_body"
    for kind in ("request_trailers", "response_trailers"):
        assert _round_trip(msg.continue_other(kind)).WhichOneof("response") == kind


def test_request_headers_are_set_and_removed():
    resp = _round_trip(msg.request_headers([("x-request-id", "r1")], ["x-envoy-max-retries"]))
    common = resp.request_headers.response
    assert _set(common.header_mutation) == [("x-request-id", b"r1")]
    assert list(common.header_mutation.remove_headers) == ["x-envoy-max-retries"]
    assert not common.clear_route_cache  # the headers phase never re-picks the route


def test_a_request_body_is_replaced_the_route_re_picked_and_metadata_attached():
    resp = _round_trip(
        msg.request_body(
            b'{"model":"up"}',
            [(":path", "/v1/messages"), ("x-api-key", "sk")],
            ["cookie"],
            metadata=("infery.attempt", {"grant": "g", "endpoint": "/chat/completions"}),
        )
    )
    common = resp.request_body.response
    assert common.body_mutation.body == b'{"model":"up"}' and common.clear_route_cache
    assert _set(common.header_mutation) == [(":path", b"/v1/messages"), ("x-api-key", b"sk")]
    assert list(common.header_mutation.remove_headers) == ["cookie"]
    fields = resp.dynamic_metadata.fields["infery.attempt"].struct_value.fields
    assert {k: v.string_value for k, v in fields.items()} == {"grant": "g", "endpoint": "/chat/completions"}


def test_preset_headers_are_set_with_the_others_in_either_request_phase():
    """Made once (a route's router headers), merged whole into each reply that sets them."""
    preset = msg.preset([("x-envoy-max-retries", "2"), ("x-envoy-retry-on", "5xx")])
    body = _round_trip(msg.request_body(None, [(ROUTE_HEADER, "c")], [], preset_headers=preset))
    headers = _round_trip(msg.request_headers([], ["x-envoy-max-retries"], preset_headers=preset))
    wanted = [("x-envoy-max-retries", b"2"), ("x-envoy-retry-on", b"5xx")]
    assert _set(body.request_body.response.header_mutation) == [(ROUTE_HEADER, b"c"), *wanted]
    mutation = headers.request_headers.response.header_mutation
    # Envoy removes before it sets: a client's value goes, the preset one stays.
    assert _set(mutation) == wanted and list(mutation.remove_headers) == ["x-envoy-max-retries"]


def test_a_request_body_kept_as_is_or_cleared():
    kept = _round_trip(msg.request_body(None, [(ROUTE_HEADER, "c")], [], clear_route_cache=False))
    common = kept.request_body.response
    assert not common.HasField("body_mutation") and not common.clear_route_cache
    assert not kept.HasField("dynamic_metadata")
    cleared = _round_trip(msg.request_body(b"", [], []))
    assert cleared.request_body.response.body_mutation.clear_body


def test_an_sse_answer_streams_its_body_and_any_other_is_buffered_up_to_the_limit():
    resp = _round_trip(msg.response_headers([("x-model-used", "m")], ["content-length"], stream_body=True))
    assert resp.mode_override.response_body_mode == ProcessingMode.STREAMED
    assert resp.mode_override.response_trailer_mode == ProcessingMode.SKIP
    assert resp.mode_override.request_trailer_mode == ProcessingMode.SKIP
    assert list(resp.response_headers.response.header_mutation.remove_headers) == ["content-length"]
    # Any other answer is buffered up to Envoy's limit (BUFFERED_PARTIAL: over it, ext_proc
    # answers the error envelope instead of Envoy's bare 500).
    plain = _round_trip(msg.response_headers([("x-model-used", "m")]))
    assert plain.mode_override.response_body_mode == ProcessingMode.BUFFERED_PARTIAL
    assert plain.mode_override.response_trailer_mode == ProcessingMode.SKIP


def test_a_response_body_replaced_with_headers_or_left_alone():
    resp = _round_trip(msg.response_body(b"translated", [("content-length", "10")]))
    common = resp.response_body.response
    assert common.body_mutation.body == b"translated"
    assert _set(common.header_mutation) == [("content-length", b"10")]
    blanked = _round_trip(msg.response_body(b""))  # bytes after a stream's end go nowhere
    assert blanked.response_body.response.body_mutation.clear_body
    untouched = _round_trip(msg.response_body(None))
    assert not untouched.response_body.HasField("response")


def test_more_time_sets_only_the_override():
    resp = _round_trip(msg.more_time(12.5))
    assert resp.override_message_timeout.ToMilliseconds() == 12_500
    assert resp.WhichOneof("response") is None


_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    body=st.binary(min_size=0, max_size=300) | st.integers(msg.SPLICE_SIZE - 2, msg.SPLICE_SIZE + 200_000),
    headers=st.lists(st.tuples(_TEXT, _TEXT), max_size=4),
    remove=st.lists(_TEXT, max_size=3),
    clear_route_cache=st.booleans(),
    metadata=st.none() | st.dictionaries(_TEXT, _TEXT, max_size=3).map(lambda f: ("infery", f)),
    preset=st.lists(st.tuples(_TEXT, _TEXT), max_size=2),
)
def test_a_spliced_reply_is_upbs_own_serialization(
    body: bytes | int,
    headers: list[tuple[str, str]],
    remove: list[str],
    clear_route_cache: bool,
    metadata: msg.Metadata,
    preset: list[tuple[str, str]],
) -> None:
    """A large body kept aside is written as the prefix, the body, the suffix: byte for byte what
    upb serializes for the same reply with the body in it, and it parses back the same."""
    if isinstance(body, int):  # large bodies: made, not drawn (hypothesis caps drawn bytes)
        body = bytes(range(256)) * (body // 256) + b"x" * (body % 256)
    args = (headers, remove, clear_route_cache, metadata, msg.preset(preset) if preset else b"")
    reply = msg.request_body(body, *args)
    # The same reply built whole by upb: the message without a body (never spliced), the body set in it.
    expected = msg.request_body(None, *args)
    assert isinstance(expected, ep.ProcessingResponse)
    mutation = expected.request_body.response.body_mutation
    if body:
        mutation.body = body
    else:
        mutation.clear_body = True
    assert isinstance(reply, msg.Spliced) == (len(body) >= msg.SPLICE_SIZE)
    out = msg.serialize(reply)
    joined = out if isinstance(out, bytes) else b"".join(out)
    assert joined == expected.SerializeToString()
    assert ep.ProcessingResponse.FromString(joined) == expected
    if isinstance(reply, msg.Spliced):
        assert reply.whole() == expected
        assert any(piece is body for piece in out)  # the body itself, not a copy
