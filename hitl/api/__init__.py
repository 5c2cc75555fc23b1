"""The HTTP API and the web review page (FastAPI; ``pip install hitl[api]``).

``create_app`` builds the app from a connected ``HitlClient`` and a store
engine; ``hitl.api.server`` runs it under uvicorn, alone (``hitl serve``) or in
the worker's event loop (``hitl up``).
"""

from hitl.api.app import create_app

__all__ = ["create_app"]
