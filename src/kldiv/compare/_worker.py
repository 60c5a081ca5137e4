"""``python -m kldiv.compare._worker FOLDER RANK``: one process of a comparison over several (see ._distributed)."""

import sys
from pathlib import Path

from ._distributed import run_worker

if __name__ == "__main__":
    run_worker(Path(sys.argv[1]), int(sys.argv[2]))
