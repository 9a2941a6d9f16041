"""ext_proc's settings model: every variable it reads, validated, with flags over them."""

from __future__ import annotations

import pytest

from ext_proc.settings import ExtProcSettings


def test_defaults_and_values() -> None:
    defaults = ExtProcSettings.from_env({})
    assert (defaults.ext_proc_port, defaults.ext_proc_uds, defaults.ext_proc_tcp) == (50051, None, None)
    assert defaults.media_allowed_hosts == frozenset() and defaults.request_log_sample == 1.0
    assert not defaults.metrics_workspace_label and defaults.uvloop
    custom = ExtProcSettings.from_env(
        {
            "INFERY_MEDIA_ALLOWED_HOSTS": " media.internal:8080, 10.0.0.5:80 ,",
            "INFERY_METRICS_WORKSPACE_LABEL": "1",
            "INFERY_REQUEST_LOG_SAMPLE": "0.1",
            "INFERY_UVLOOP": "0",
            "INFERY_LOG_LEVEL": "warning",
            "INFERY_EXT_PROC_TCP": "yes",
        }
    )
    assert custom.media_allowed_hosts == {"media.internal:8080", "10.0.0.5:80"}
    assert custom.metrics_workspace_label and custom.request_log_sample == 0.1 and not custom.uvloop
    assert custom.log_level == "WARNING" and custom.ext_proc_tcp is True
    assert not ExtProcSettings.from_env({"INFERY_METRICS_WORKSPACE_LABEL": "0"}).metrics_workspace_label


def test_flags_win_over_variables_and_are_validated_alike() -> None:
    env = {"INFERY_EXT_PROC_PORT": "50060", "INFERY_METRICS_PORT": "9500"}
    settings = ExtProcSettings.from_env(env, overrides={"ext_proc_port": 50070})
    assert (settings.ext_proc_port, settings.metrics_port) == (50070, 9500)
    with pytest.raises(ValueError, match="INFERY_EXT_PROC_PORT"):
        ExtProcSettings.from_env({}, overrides={"ext_proc_port": 70000})


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INFERY_REQUEST_LOG_SAMPLE": "often"}, "INFERY_REQUEST_LOG_SAMPLE"),
        ({"INFERY_REQUEST_LOG_SAMPLE": "-0.1"}, "INFERY_REQUEST_LOG_SAMPLE"),
        ({"INFERY_MAX_SSE_EVENT_BYTES": "100"}, "INFERY_MAX_SSE_EVENT_BYTES: Input should be greater than"),
        ({"INFERY_EXT_PROCS": "0"}, "INFERY_EXT_PROCS"),
        (
            {"INFERY_XDS_TLS_CERT_FILE": "/c.pem", "INFERY_XDS_TLS_KEY_FILE": "/k.pem"},
            "need INFERY_XDS_TLS_CA_FILE",
        ),
        ({"INFERY_XDS_TLS_CA_FILE": "/ca.pem", "INFERY_XDS_TLS_CERT_FILE": "/c.pem"}, "go together"),
    ],
)
def test_a_bad_value_names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExtProcSettings.from_env(env)
