"""The admin dashboard: static files the control plane serves at /dashboard.

The page is a client of the admin API and nothing more: it loads without a token (it holds
no data), and every call it makes goes to /admin/v1 with the token the user types in.
"""

from control_plane.dashboard.serve import install

__all__ = ["install"]
