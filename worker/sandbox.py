"""Temporal's sandbox, without entering it to look up a payload's serialization context.

Before the SDK encodes or decodes a payload of a sandboxed workflow, it asks the
workflow's instance which serialization context applies (the workflow's, or that of
the activity the payload belongs to) and, on encode, which external-storage target.
The sandboxed runner answers each question by executing code inside the sandbox:
swapping ``sys.modules`` and the import hooks in and out, 40-80 µs a time. A payload
costs three such entries to decode and four to encode, so they outnumber the
activations that run workflow code by about five to one (docs/BENCHMARKS.md,
"The sandbox, counted").

The answers are read from the SDK's own instance state (the workflow's info, its
pending activities) with no workflow code involved, and the SDK modules they use are
the same objects inside the sandbox as outside, so this runner asks the in-sandbox
instance directly. The workflow code itself still runs only inside the sandbox, with
all its checks: what the sandbox guards is unchanged.

This reaches into two private names of the SDK (``_Instance`` and the sandbox's
``__temporal_in_sandbox`` global), so pyproject.toml pins the SDK's minor version. If
a later SDK moves the global, the lookups fall back to the SDK's own path, and
tests/worker/test_sandbox.py fails so the upgrade is seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio.converter import SerializationContext
from temporalio.worker import WorkflowInstance, WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _Instance

IN_SANDBOX = "__temporal_in_sandbox"  # where _Instance keeps the in-sandbox instance


class _DirectLookups(_Instance):
    """A sandboxed instance whose serialization-context lookups do not enter the sandbox."""

    def _inside(self) -> Any:
        return self.globals_and_locals.get(IN_SANDBOX)

    def get_serialization_context(self, command_info: Any) -> SerializationContext | None:
        inside = self._inside()
        if inside is None:
            return super().get_serialization_context(command_info)
        context: SerializationContext | None = inside.get_serialization_context(command_info)
        return context

    def get_external_store_context(self, command_info: Any) -> Any:
        inside = self._inside()
        if inside is None:
            return super().get_external_store_context(command_info)
        return inside.get_external_store_context(command_info)


@dataclass(frozen=True)
class DirectLookupSandboxRunner(SandboxedWorkflowRunner):
    """``SandboxedWorkflowRunner`` whose instances answer context lookups directly."""

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _DirectLookups(det, self.runner_class, self.restrictions)
