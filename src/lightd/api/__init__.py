"""The HTTP API: app factory, routes, and the one error map."""

from lightd.api.app import create_app

__all__ = ["create_app"]
