"""``python -m kldiv.compare._worker FOLDER RANK``: one process of a comparison over several (see ._distributed).

It sits above both the file comparison (:mod:`._files`, which starts these processes through
:mod:`._distributed`) and the merge, so neither of those imports the other's caller."""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np

from .. import _config
from ._comparison import Comparison
from ._distributed import _torch, merge_across_processes
from ._files import compare_rows, open_pair
from ._storage import write_arrays


def run_worker(folder: Path, rank: int) -> None:
    """One rank of ``folder``'s job: compare tokens [n r / N, n (r + 1) / N), merge over the group, and (rank 0)
    write the merged state; an error in the comparison is written for the parent, which raises it."""
    job = json.loads((folder / "job.json").read_text())
    world, settings = job["workers"], job["settings"]
    settings["top_k"] = tuple(settings["top_k"])
    labels = np.load(folder / "labels.npy", allow_pickle=False) if job["labels"] else None
    torch, dist = _torch()
    _config.set_config(threads=max(1, _config.get_config().threads // world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=(folder / "rendezvous").as_uri(), rank=rank, world_size=world,
                            timeout=timedelta(days=1))  # the parent ends the group if a member dies
    try:
        comparison = Comparison(**settings)
        error: Exception | None = None
        try:
            ref, oth = open_pair(job["reference"], job["other"], settings["vocab_size"])
            start, stop = ref.n_rows * rank // world, ref.n_rows * (rank + 1) // world

            def progress(finished: int, _total: int) -> None:
                (folder / f"progress-{rank}.tmp").write_text(str(finished))
                os.replace(folder / f"progress-{rank}.tmp", folder / f"progress-{rank}")

            compare_rows(ref, oth, labels, comparison, start, stop, progress)
        except Exception as caught:  # reported to the parent; every rank stops
            error = caught
        failed = torch.tensor([int(error is not None)])
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if int(failed):
            if error is not None:
                (folder / f"error-{rank}.json").write_text(json.dumps({"type": type(error).__name__,
                                                                       "message": str(error)}))
            return
        merge_across_processes(comparison)
        if rank == 0:
            write_arrays(folder / "state.safetensors", comparison.state_dict())
    finally:
        dist.destroy_process_group()



if __name__ == "__main__":
    run_worker(Path(sys.argv[1]), int(sys.argv[2]))
