"""Settings shared by every entry point (worker, CLI, API, tests).

Built once in an entry point and passed down; nothing deeper reads the
environment. Secrets are ``SecretStr`` so they never print, and they stay in
the worker process: the judge's API key is held by the judge activity and never
enters workflow history.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_TASK_QUEUE = "hitl-decisions"


class Settings(BaseSettings):
    """Environment variables with the ``HITL_`` prefix."""

    model_config = SettingsConfigDict(env_prefix="HITL_", extra="ignore", env_ignore_empty=True)

    temporal_address: str = "localhost:7233"
    namespace: str = "default"
    task_queue: str = DEFAULT_TASK_QUEUE
    temporal_api_key: SecretStr | None = None
    temporal_tls: bool = False

    data_dir: Path = Path(".hitl")
    database_url: str | None = Field(
        default=None, description="Any SQLAlchemy URL; SQLite under data_dir when unset."
    )
    policy: Path | None = Field(default=None, description="Policy TOML; built-in when unset.")

    judge_url: str | None = None
    judge_model: str = "gpt-4o-mini"
    judge_api_key: SecretStr | None = None
    judge_timeout_seconds: float = 20.0
    judge_max_response_bytes: int = 65_536

    executor_timeout_seconds: float = 15.0

    outbound_allow_hosts: str | None = Field(
        default=None,
        description="Comma-separated hosts the worker may POST to (action targets, the judge, "
                    "regeneration endpoints): names (case-insensitive), *.suffix wildcards, IP "
                    "addresses and CIDRs. Set, it is the whole list. Unset, any host but "
                    "link-local, cloud metadata, unspecified, multicast and broadcast "
                    "addresses (hitl.outbound).")

    policy_refresh_seconds: float = Field(
        default=10.0, gt=0, le=3600,
        description="How often workers re-read the active policy version, audit stats and "
                    "review backlog from the store.")
    max_cached_workflows: int = Field(
        default=500, ge=0,
        description="Decisions a worker keeps in memory; bounds its resident memory "
                    "(about 0.18 MB each over a ~150 MB idle worker). Evicted decisions "
                    "are replayed from history when they wake.")

    workflow_sandbox: Literal["strict", "off"] = Field(
        default="strict",
        description="strict: each decision's workflow code runs in Temporal's sandbox, which "
                    "refuses non-deterministic calls at run time. off: no sandbox, about a "
                    "quarter less worker CPU per decision; determinism is then guarded only by "
                    "the test suite and the replay tests, which always run strict.")

    inactive_patches: str | None = Field(
        default=None,
        description="Comma-separated workflow.patched IDs this worker leaves inactive (e.g. "
                    "folded-2026-11), for a rolling upgrade: new code runs as the old did "
                    "until the setting is dropped, once no older worker is left. A decision "
                    "whose history already holds a patch's marker still takes its path.")

    reviewer_token: SecretStr | None = Field(
        default=None, description="The token `hitl approve|reject` sign with (a reviewer's "
                                  "own, from `hitl reviewers add|rotate`).")

    verdict_proofs: Literal["required", "off"] = Field(
        default="required",
        description="required: every reviewer action must carry a proof signed with the "
                    "reviewer's own token (hitl approve|reject and the API sign). off: the "
                    "deployment trusts everyone who can signal or update a workflow on the "
                    "Temporal frontend to name any reviewer (docs/SECURITY.md).")

    metrics_address: str | None = Field(
        default=None, description="host:port for the worker's Prometheus /metrics endpoint.")

    # Payload encryption (hitl.codec); validated when the codec is built, since pydantic
    # would echo the raw keys in a validation error.
    codec_keys: SecretStr | None = Field(
        default=None, description="id=base64key[,id=base64key...] (256-bit AES-GCM keys); "
                                  "unset: payloads in clear.")
    codec_key_id: str | None = Field(
        default=None, description="The key new payloads are encrypted with (one of codec_keys; "
                                  "optional with a single key).")
    codec_accept_clear_until: datetime | None = Field(
        default=None, description="ISO 8601 instant with a time zone: until then, payloads "
                                  "in clear are accepted (histories begun before encryption "
                                  "was switched on); after it, and when unset, refused. Set "
                                  "it past the hard deadline of every decision that may meet "
                                  "one.")
    codec_cors_origins: str | None = Field(
        default=None, description="Comma-separated origins (the Temporal UI's) allowed to call "
                                  "the codec server.")

    def resolved_database_url(self) -> str:
        """The store URL: ``HITL_DATABASE_URL`` or a SQLite file in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'hitl.db').resolve()}"
