"""The gateway's request ids, and what Envoy reads in them when it re-picks a metered request's route."""

from __future__ import annotations

import time
import uuid

import pytest

from ext_proc.request_id import NOT_TRACED, envoys_request_id, new_request_id, trace_reason

_REASON_TRACED = {"9", "a", "b"}  # Envoy's Tracing::Reason packed: sampled, service forced, client forced


def _envoys_second_decision(request_id: str, share: float) -> tuple[bool, str]:
    """What Envoy 1.40 decides for a refreshed route, and the x-request-id it leaves: its
    ``ConnectionManagerUtility::mutateTracingRequestHeader`` with the UUID request-id extension
    (pack_trace_reason on) and the listener's ``random_sampling`` (share x 10000 of 10000)."""
    roll = int(request_id[:8], 16) % 10_000  # UUIDRequestIDExtension::getInteger
    traced = len(request_id) == 36 and request_id[14] in _REASON_TRACED  # getTraceReason
    if not traced and roll < round(share * 10_000):  # tracing.random_sampling
        traced = True
        if len(request_id) == 36:  # setTraceReason(Sampling)
            request_id = request_id[:14] + "9" + request_id[15:]
    return traced, request_id


def test_request_ids_are_unique_uuids_ordered_by_time() -> None:
    """They key the usage table: ordered ids append to its index instead of scattering."""
    first = [new_request_id() for _ in range(1000)]
    time.sleep(0.002)
    later = new_request_id()
    assert len(set(first)) == 1000
    assert all(str(uuid.UUID(i)) == i for i in first)
    assert later > max(first)


@pytest.mark.parametrize("reason", ["9", "a", "b"])
def test_envoys_decision_to_trace_survives_its_second_reading(reason: str) -> None:
    envoys = f"6f1e3c9a-2b7d-{reason}c51-9a0e-3d2f1b4c5a6e"
    ours = new_request_id(trace_reason(envoys))
    assert ours[14] == reason
    for share in (0.01, 0.5, 0.99, 1.0):
        assert _envoys_second_decision(ours, share) == (True, ours)


def test_an_untraced_request_stays_untraced_and_keeps_its_id() -> None:
    """Below a share of 1, Envoy rolls again for an id it reads as untraced; the roll on a gateway
    id never samples, so the id the client gets is the one the usage record holds."""
    envoys = "6f1e3c9a-2b7d-4c51-9a0e-3d2f1b4c5a6e"
    ours = new_request_id(trace_reason(envoys))
    assert ours[14] == NOT_TRACED
    for share in (0.0001, 0.5, 0.9999):
        assert _envoys_second_decision(ours, share) == (False, ours)
    # The 32-digit id before: every sampled request read as untraced, then rolled on its time.
    old = f"{time.time_ns() // 1_000_000:012x}{0:020x}"
    assert _envoys_second_decision(old, 0.5)[0] is (int(old[:8], 16) % 10_000 < 5_000)


def test_a_trace_reason_is_read_only_from_a_uuid() -> None:
    assert trace_reason("6f1e3c9a-2b7d-ac51-9a0e-3d2f1b4c5a6e") == "a"
    assert trace_reason("6f1e3c9a-2b7d-4c51-9a0e-3d2f1b4c5a6e") == NOT_TRACED
    assert trace_reason("") == NOT_TRACED
    assert trace_reason("0123456789abcdef") == NOT_TRACED


def test_only_envoys_uuids_are_taken_never_a_gateway_id() -> None:
    envoys = str(uuid.uuid4())
    assert envoys_request_id(envoys) == envoys
    for value in (new_request_id("9"), new_request_id(), "spoofed-123", "", uuid.uuid4().hex):
        taken = envoys_request_id(value)
        assert taken != value and str(uuid.UUID(taken)) == taken
