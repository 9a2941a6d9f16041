"""The batch worker's settings: the listener has one name in every process."""

from __future__ import annotations

from control_plane.batches.settings import BatchSettings


def test_the_listener_is_infery_listener_url_as_for_ext_proc():
    settings = BatchSettings.from_env({"INFERY_LISTENER_URL": "http://gateway:8080"})
    assert settings.listener_url == "http://gateway:8080"
    names = {name for name, _, _ in BatchSettings.variables()}
    assert "INFERY_LISTENER_URL" in names
    assert "INFERY_BATCH_GATEWAY_URL" not in names  # pre-1.0: renamed, no alias


def test_lines_are_kept_thirty_days_after_their_batch_ends_by_default():
    assert BatchSettings.from_env({}).batch_lines_retention_days == 30
    assert (
        BatchSettings.from_env({"INFERY_BATCH_LINES_RETENTION_DAYS": "0.5"}).batch_lines_retention_days == 0.5
    )
