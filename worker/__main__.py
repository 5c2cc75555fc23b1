"""``python -m worker``: exactly ``hitl worker`` (settings from the environment).

It goes through the ``hitl`` console entry rather than its own ``asyncio.run``
so both ways of starting a worker fail the same way: one ``hitl: error:`` line
naming the Temporal address and exit 1 when Temporal is unreachable, and an exit
through ``os._exit``. Letting the interpreter finalize normally after a failed
connect can abort it (exit 134, ``Fatal Python error: PyGILState_Release``):
the Temporal core runtime's threads are still alive and call back into Python
while it is being torn down.
"""

from __future__ import annotations

import sys

from hitl.cli import entry


def main() -> None:
    # Arguments pass through, so ``python -m worker --help`` is ``hitl worker --help``.
    sys.argv[1:1] = ["worker"]
    entry()


if __name__ == "__main__":
    main()
