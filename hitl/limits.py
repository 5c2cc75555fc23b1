"""How big anything a caller sends may be, in one place, and the budget the numbers keep.

Temporal refuses any payload over 2 MiB (``limit.blobSize.error``; it warns from 512 KiB)
and any history transaction over 4 MiB. A payload over the limit is not refused at the
door: it fails the workflow task that tries to write it, and the SDK retries that task
forever, so the decision is wedged. The limits below keep the largest accepted input
well inside those limits on the common path (submit, edit and approve, execute), and
inside them on the longer ones as far as input limits can (see below).

Text is measured in bytes as it is stored: UTF-8 inside a JSON string, escapes included
(``"\\u0000"`` is six bytes), because that is what lands in a payload. For ordinary text
that is its UTF-8 size; a limit in characters would let 4-byte characters (or escapes)
quadruple it. Structured values (``action.params``, the context) are measured as compact
JSON.

The budget, with O = an output, P = params, C = the context, R = a reason (each at its
limit below) and S = the small fields (IDs, URLs, 20 candidates of 500 characters, at
most about 90 KiB all told):

- the request (workflow input): O + P + C + S = 128 + 64 + 64 + 90 = 346 KiB;
- an edit-and-approve (update input, then the executor's input): O + P + R + S
  <= 128 + 64 + 16 + 15 = 223 KiB; a rejection: O (correct answer) + R = 144 KiB;
- the judge's input: O + P + C + S = 346 KiB; a regeneration's input: 2O + P + R + S
  = 351 KiB; its result: O + S = 218 KiB;
- the final ``DecisionState`` after submit -> edit -> approve -> execute: the submitted
  output (attempts), the edited one twice (final output, delivery), the reason twice
  (review, attempt verdict), the judge's reasons (at most the judge's response,
  64 KiB): 3O + 2R + 64 + S = 384 + 32 + 64 + 15 = 495 KiB, under the 512 KiB warning;
- ``record_decision``'s input is request + state: 346 + 495 = 841 KiB.

Longer paths keep more: each attempt's output stays in ``attempts``, and each rejection
keeps its correct answer and reason in ``reviews``. Three regenerations (four outputs),
each after one rejection with a correct answer, then a provisional delivery revised by an
edit (two deliveries and the final output), two approvers:
4(O + 2R) + 3(O + R) + 3O + 2R + 64 + S = 640 + 432 + 384 + 32 + 64 + 15 = 1,567 KiB;
with blind reviews of two where both reviewers reject each time, 1,999 KiB: under 2 MiB,
just. Past that, input limits cannot help without crippling outputs: a policy may require
up to five approvers, each blind rejection adds O + R (144 KiB), and the workflow keeps
every refused review too, reason and correct answer included. Bounding those is the
workflow's to do (keep one correct answer per attempt, cap refused reviews).
``record_decision`` runs as a local activity, so its input (request + state) is never a
payload on the server; for decisions that still schedule it, it is 346 + 495 KiB on the
common path above.

A workflow task writes at most one state (the last) or, while reviews arrive, the accepted
updates (at most 10 in flight, the server's default: 10 x 223 KiB) and one activity
input: under the 4 MiB transaction limit either way.

An HTTP body may be larger than the fields it carries, since JSON may escape each
non-ASCII character (a 4-byte character as a 12-byte surrogate pair): at three times
the fields of the largest request, 1 MiB holds any acceptable request however it is
encoded, and the API refuses a larger body (413) before parsing it.
"""

from __future__ import annotations

KIB = 1024
MIB = 1024 * KIB

MAX_BODY_BYTES = 1 * MIB
"""An HTTP request body, and a request or policy file the CLI reads."""

MAX_DATA_FILE_BYTES = 256 * MIB
"""Labeled decisions for ``hitl calibrate``: a data set, read whole."""

MAX_CODEC_BODY_BYTES = 16 * MIB
"""A codec-server call: the Temporal UI sends whole events' payloads (each up to 2 MiB,
base64-encoded) at once."""

MAX_OUTPUT_BYTES = 128 * KIB
"""An output: submitted, edited, regenerated, or given as the correct answer."""

MAX_REASON_BYTES = 16 * KIB
"""A reviewer's reason (5,000 characters of any script but the 4-byte ones)."""

MAX_PARAMS_BYTES = 64 * KIB
"""``action.params`` as compact JSON."""

MAX_CONTEXT_BYTES = 64 * KIB
"""The request's context as compact JSON, free-form extras included."""

MAX_JSON_DEPTH = 32
"""Nesting of objects and arrays inside ``action.params`` and a context extra."""

MAX_OFFSET = 1_000_000_000
"""A paging offset: past any real queue, and inside every store's integer range."""
