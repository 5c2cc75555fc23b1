"""hitl: durable human-in-the-loop approval for AI decisions, on Temporal.

The core package holds everything that is not Temporal plumbing: request and
state models, the pure routing policy and rules, the feedback store, settings,
the client and the CLI. Workflows, activities and the worker live in their own
top-level packages and import from here.
"""

__version__ = "0.1.0"
