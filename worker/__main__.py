"""``python -m worker``: run the hitl worker with settings from the environment."""

from __future__ import annotations

import asyncio

from hitl.logs import configure_logging
from hitl.settings import Settings
from worker.main import run_worker


def main() -> None:
    configure_logging()
    asyncio.run(run_worker(Settings()))


if __name__ == "__main__":
    main()
