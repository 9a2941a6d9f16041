"""The bounds of a batch of kept responses, shared by ext_proc (a KeepMany's rows) and the control
plane (a write's rows, and what a KeepMany may carry): greedy, in order, never empty, within
the rows and bytes unless one row alone is larger."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from infery_proto import response_batches
from infery_proto.v1 import responses_pb2

sizes_lists = st.lists(st.integers(min_value=1, max_value=5_000), max_size=80)
rows_caps = st.integers(min_value=1, max_value=10)
bytes_caps = st.integers(min_value=1, max_value=12_000)


@given(sizes_lists, rows_caps, bytes_caps)
def test_split_keeps_every_row_in_order_within_the_bounds(sizes: list[int], rows: int, cap: int) -> None:
    lengths = response_batches.split(sizes, rows, cap)
    assert sum(lengths) == len(sizes) and all(length >= 1 for length in lengths)
    start = 0
    for length in lengths:
        batch = sizes[start : start + length]
        assert len(batch) <= rows
        assert len(batch) == 1 or sum(batch) <= cap  # one larger row goes alone
        assert response_batches.within(batch, rows, cap)
        following = sizes[start : start + length + 1]
        if start + length < len(sizes):  # greedy: the next row would not have fit
            assert not response_batches.within(following, rows, cap)
        start += length


@given(sizes_lists, rows_caps, bytes_caps)
def test_take_is_the_first_batch_of_split(sizes: list[int], rows: int, cap: int) -> None:
    lengths = response_batches.split(sizes, rows, cap)
    assert response_batches.take(iter(sizes), rows, cap) == (lengths[0] if lengths else 0)


def test_the_default_bounds() -> None:
    assert (response_batches.BATCH_ROWS, response_batches.BATCH_BYTES) == (64, 4 << 20)
    assert response_batches.within([1] * 64) and not response_batches.within([1] * 65)
    assert response_batches.within([5 << 20])  # alone
    assert not response_batches.within([4 << 20, 1])
    assert response_batches.split([2 << 20, 2 << 20, 1]) == [2, 1]


@given(st.binary(max_size=70_000), st.text(max_size=40))
def test_a_rows_size_is_what_it_adds_to_a_keep_many(body: bytes, workspace: str) -> None:
    """The bytes counted are the request's own: the sum of the rows' sizes is its size, so a
    batch within the bytes bound is a message within gRPC's (4 MiB by default)."""
    row = responses_pb2.StoredResponse(workspace_id=workspace, id="resp_1", response=body)
    many = responses_pb2.StoredResponses(responses=[row, row, row])
    assert 3 * response_batches.size_of(row) == many.ByteSize()
