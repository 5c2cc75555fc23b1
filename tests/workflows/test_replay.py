"""Replay saved histories: a change that would break running decisions fails here.

Histories come from scripts/record_histories.py, one per zone and path. If this
fails after a change to DecisionWorkflow, running workflows would fail the same
way on deploy: guard the change with ``workflow.patched`` instead of
re-recording.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from hitl.connection import data_converter
from worker.main import SANDBOX
from workflows.decision import DecisionWorkflow

HISTORIES = sorted((Path(__file__).parent.parent / "histories").glob("*.json"))


def test_histories_cover_every_path() -> None:
    names = {path.stem for path in HISTORIES}
    assert {"auto", "auto_recorded_locally", "auto_audit", "queue_rejected",
            "escalate_approved_with_refusal", "regenerated", "blind_double_review",
            "judge_error", "provisional_revised", "irreversible_expired",
            "approval_written_with_execution", "provisional_revision_with_review",
            "auto_folded", "approval_folded", "provisional_folded", "bound_four_eyes_edit",
            "bound_regenerated", "bound_after_upgrade", "bound_provisional_revised"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_replay(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())  # noqa: ASYNC240 - tiny file
    replayer = Replayer(workflows=[DecisionWorkflow], data_converter=data_converter(),
                        workflow_runner=SANDBOX)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.stem}: {result.replay_failure}"
