"""The production stack (docker-compose.yml, Dockerfile, deploy/) without a Docker engine.

The file is checked as written (PyYAML) and, where Debian's or Docker's
``docker-compose`` is installed, as compose itself resolves it: it must validate
with ``POSTGRES_PASSWORD`` set and refuse to without.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from hitl import search_attributes
from hitl.api.ui_proxy import WRITE_ACTION_FLAGS
from hitl.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
REGISTER = ROOT / "deploy" / "temporal" / "register.sh"
SETUP_SCHEMA = ROOT / "deploy" / "temporal" / "setup-schema.sh"

SERVICES = {
    "postgres", "temporal-schema", "temporal", "temporal-register", "temporal-ui",
    "worker", "api",
}
ADMIN_TOOLS = ("temporal-schema", "temporal-register")
HITL_VARIABLES = {
    "HITL_TEMPORAL_ADDRESS", "HITL_NAMESPACE", "HITL_DATABASE_URL", "HITL_DATA_DIR",
    "HITL_POLICY", "HITL_JUDGE_URL", "HITL_JUDGE_MODEL", "HITL_JUDGE_API_KEY",
    "HITL_OUTBOUND_ALLOW_HOSTS",
}
DOCKER_COMPOSE = shutil.which("docker-compose")
# The UI image's variable for each setting the UI hides an action by (its config template
# maps DisableWriteActions to TEMPORAL_DISABLE_WRITE_ACTIONS, and so on): the same list
# ``hitl up``'s read-only proxy switches off.
UI_READ_ONLY = {"TEMPORAL_" + re.sub(r"(?<!^)(?=[A-Z])", "_", flag).upper(): "true"
                for flag in WRITE_ACTION_FLAGS}


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    result = loaded["services"]
    assert isinstance(result, dict)
    return result


def environment(service: dict[str, Any]) -> dict[str, str | None]:
    """A service's environment as a mapping, whichever form the file uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {k: v for k, _, v in (item.partition("=") for item in env)}
    return {k: None if v is None else str(v) for k, v in env.items()}


def depends_on(service: dict[str, Any]) -> dict[str, str]:
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in deps.items()}


def image(service: dict[str, Any]) -> str:
    name = service.get("image")
    assert isinstance(name, str)
    return name


def test_every_service_is_defined(services: dict[str, Any]) -> None:
    assert SERVICES <= services.keys()


def test_temporal_images_are_current_and_pinned(services: dict[str, Any]) -> None:
    for name, service in services.items():
        assert "auto-setup" not in service.get("image", ""), f"{name}: auto-setup is deprecated"
    assert image(services["temporal"]).startswith("temporalio/server:")
    assert image(services["temporal-ui"]).startswith("temporalio/ui:")
    for name in ADMIN_TOOLS:
        assert image(services[name]).startswith("temporalio/admin-tools:")
    for name in ("postgres", "temporal", "temporal-ui", *ADMIN_TOOLS):
        tag = image(services[name]).rpartition(":")[2]
        assert re.match(r"\d+\.\d+", tag), f"{name}: pin a version, not {tag!r}"


def test_temporal_ui_is_read_only(services: dict[str, Any]) -> None:
    assert "TEMPORAL_WORKFLOW_SIGNAL_DISABLED" in UI_READ_ONLY
    env = environment(services["temporal-ui"])
    assert {name: env.get(name) for name in UI_READ_ONLY} == UI_READ_ONLY


def test_temporal_persists_and_indexes_in_postgres(services: dict[str, Any]) -> None:
    env = environment(services["temporal"])
    assert env["DB"] == "postgres12"
    assert env["POSTGRES_SEEDS"] == "postgres"
    assert env["DBNAME"] == "temporal"
    assert env["VISIBILITY_DBNAME"] == "temporal_visibility"
    assert env.get("ENABLE_ES", "false") == "false"
    mounted = {v.split(":")[1] for v in services["temporal"]["volumes"]}
    assert str(Path(env["DYNAMIC_CONFIG_FILE_PATH"] or "").parent) in mounted


def test_worker_and_api_get_every_hitl_setting(services: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for variable in HITL_VARIABLES:  # the list itself must name real settings
        assert variable.removeprefix("HITL_").lower() in fields, variable
    for name in ("worker", "api"):
        missing = HITL_VARIABLES - environment(services[name]).keys()
        assert not missing, f"{name} lacks {sorted(missing)}"


def test_store_lives_in_its_own_postgres_database(services: dict[str, Any]) -> None:
    for name in ("worker", "api"):
        url = environment(services[name])["HITL_DATABASE_URL"] or ""
        assert url.startswith("postgresql+psycopg://"), url
        assert url.endswith("@postgres:5432/hitl"), url
    init = ROOT / "deploy" / "postgres"
    assert any("CREATE DATABASE hitl" in p.read_text() for p in init.iterdir())
    assert "--db hitl create" in SETUP_SCHEMA.read_text()


def test_worker_can_scale(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker
    assert not worker.get("ports")
    # A fixed container name would also stop two stacks (-p) sharing a host.
    assert not any("container_name" in s for s in services.values())


def test_api_runs_the_review_server(services: dict[str, Any]) -> None:
    api = services["api"]
    assert api["command"] == ["hitl", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert any(str(port).endswith(":8000") for port in api["ports"])
    assert "healthcheck" in api


def test_database_password_has_no_default() -> None:
    text = COMPOSE.read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert uses, "POSTGRES_PASSWORD is never used"
    for modifier in uses:
        assert modifier.startswith(":?"), f"${{POSTGRES_PASSWORD{modifier}}} allows a default"
    assert "POSTGRES_PASSWORD=\n" in (ROOT / "deploy" / ".env.example").read_text()


def test_every_setting_is_documented_in_env_example(services: dict[str, Any]) -> None:
    substituted = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    passed_through = {k for s in services.values() for k, v in environment(s).items() if v is None}
    documented = set(re.findall(r"^#?(\w+)=", (ROOT / "deploy" / ".env.example").read_text(), re.M))
    assert substituted | passed_through <= documented


def test_start_order_waits_for_health(services: dict[str, Any]) -> None:
    assert depends_on(services["temporal-schema"]) == {"postgres": "service_healthy"}
    assert depends_on(services["temporal"]) == {
        "temporal-schema": "service_completed_successfully"}
    assert depends_on(services["temporal-register"]) == {"temporal": "service_healthy"}
    for name in ("worker", "api"):
        assert depends_on(services[name]) == {
            "postgres": "service_healthy",
            "temporal-register": "service_completed_successfully",
        }
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            if condition == "service_healthy":
                assert "healthcheck" in services[dependency], f"{name} waits on {dependency}"
    assert "pg_isready" in str(services["postgres"]["healthcheck"]["test"])


def test_bind_mounts_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"


def test_registration_matches_the_search_attributes_hitl_upserts() -> None:
    registered = dict(re.findall(r"--name (\w+) --type (\w+)", REGISTER.read_text()))
    expected = {key.name: kind for key, kind in search_attributes.CLI_TYPES.items()}
    assert registered == expected


def test_schema_setup_covers_both_temporal_databases() -> None:
    text = SETUP_SCHEMA.read_text()
    assert 'update-schema --schema-name "$schema"' in text
    assert re.search(r"^setup temporal postgresql/v12/temporal$", text, re.M)
    assert re.search(r"^setup temporal_visibility postgresql/v12/visibility$", text, re.M)
    for step in ("create", "setup-schema -v 0.0", "update-schema"):
        assert f"--db \"$db\" {step}" in text


@pytest.mark.parametrize("script", [REGISTER, SETUP_SCHEMA], ids=lambda p: p.name)
def test_scripts_parse_as_posix_sh(script: Path) -> None:
    # admin-tools is Alpine: busybox sh, no bash.
    result = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert script.read_text().startswith("#!/bin/sh\n")


def test_dockerfile_builds_a_non_root_worker_image() -> None:
    lines = [line.strip() for line in DOCKERFILE.read_text().splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in instructions
    # One image for the worker and the api service: it needs both extras.
    assert 'RUN pip install ".[postgres,api]"' in instructions
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert instructions[-1] == 'CMD ["python", "-m", "worker"]'
    for line in instructions:
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists() or source == "README.md", source


def _compose_config(tmp_path: Path, password: str | None) -> subprocess.CompletedProcess[str]:
    if DOCKER_COMPOSE is None:
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    empty_env_file = tmp_path / "empty.env"  # a developer's .env must not leak in
    empty_env_file.write_text("")
    return subprocess.run(
        [DOCKER_COMPOSE, "--env-file", str(empty_env_file), "-f", str(COMPOSE), "config"],
        capture_output=True, text=True, env=env, timeout=60, cwd=ROOT,
    )


def test_compose_validates_with_a_password(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, "s3cret-test-only")
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]
    assert SERVICES <= resolved.keys()
    url = resolved["worker"]["environment"]["HITL_DATABASE_URL"]
    assert url == "postgresql+psycopg://hitl:s3cret-test-only@postgres:5432/hitl"
    ui = resolved["temporal-ui"]["environment"]
    assert {name: ui.get(name) for name in UI_READ_ONLY} == UI_READ_ONLY


def test_compose_refuses_to_run_without_a_password(tmp_path: Path) -> None:
    result = _compose_config(tmp_path, None)
    assert result.returncode != 0
    assert "POSTGRES_PASSWORD" in result.stderr
