"""The API fixtures (tests/api/conftest.py) for the end-to-end attacks here."""

from tests.api.conftest import make_api

__all__ = ["make_api"]
