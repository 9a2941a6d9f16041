"""Envoy as a plain reverse proxy in front of the simulator: the ceiling the gateway is measured against.

Same binary and worker count as the gateway's Envoy; no ext_proc, no xDS, limits opened as wide
as the gateway's provider clusters so the comparison isolates what ext_proc costs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.launch import bounded_spawn
from infery.stack import BIN, Process, free_port, port_open, wait_until

_UNLIMITED = 1_000_000


def config(listen_port: int, upstream_port: int) -> dict[str, Any]:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "passthrough",
        "codec_type": "AUTO",
        "request_timeout": "0s",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "provider", "timeout": "0s"}}],
                }
            ],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                },
            }
        ],
    }
    return {
        "static_resources": {
            "listeners": [
                {
                    "name": "passthrough",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "provider",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "circuit_breakers": {
                        "thresholds": [
                            {
                                "max_connections": _UNLIMITED,
                                "max_pending_requests": _UNLIMITED,
                                "max_requests": _UNLIMITED,
                            }
                        ]
                    },
                    "load_assignment": {
                        "cluster_name": "provider",
                        "endpoints": [
                            {
                                "lb_endpoints": [
                                    {
                                        "endpoint": {
                                            "address": {
                                                "socket_address": {
                                                    "address": "127.0.0.1",
                                                    "port_value": upstream_port,
                                                }
                                            }
                                        }
                                    }
                                ]
                            }
                        ],
                    },
                }
            ],
        },
    }


def start(work_dir: Path, upstream_port: int, concurrency: int) -> tuple[Process, int]:
    """Envoy proxying a free local port to ``upstream_port``; returns the process and that port."""
    port = free_port()
    path = work_dir / "envoy-passthrough.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config(port, upstream_port)))
    argv = [
        str(BIN / "envoy"),
        "-c",
        str(path),
        "--disable-hot-restart",
        "--concurrency",
        str(concurrency),
        "--log-level",
        "warning",
    ]
    proc = bounded_spawn("envoy_passthrough", argv, work_dir / "logs")
    try:
        wait_until(lambda: port_open(port), "the pass-through Envoy", 60, [proc])
    except BaseException:
        proc.stop()
        raise
    return proc, port
