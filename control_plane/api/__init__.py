"""The admin REST API (FastAPI): `create_app(settings, session_factory)`."""

from control_plane.api.app import create_app

__all__ = ["create_app"]
