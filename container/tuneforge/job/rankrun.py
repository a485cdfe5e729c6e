"""torchrun, plus a record of which ranks failed and how.

`python -m tuneforge.job.rankrun <torchrun arguments>` runs torch.distributed.run exactly as
`torchrun` does; when ranks fail it writes torchrun's own account (global rank, exit code or
signal, time) to $TUNEFORGE_RANK_FAILURES as JSON, which the launcher reads to name the rank that
failed, including one killed by a signal, which leaves no Python traceback behind.
"""

from __future__ import annotations

import json
import os
import sys

from ..contract import train_env


def _dump(failures: dict, path: str) -> None:
    rows = [{"rank": int(rank), "local_rank": f.local_rank, "exitcode": f.exitcode, "pid": f.pid,
             "timestamp": f.timestamp, "signal": f.signal_name() if f.exitcode < 0 else None}
            for rank, f in failures.items()]
    with open(path + ".tmp", "w") as handle:
        json.dump({"failures": rows}, handle, indent=1)
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    args = parse_args(sys.argv[1:] if argv is None else argv)
    target = train_env().rank_failures
    # the ranks die with this process (worker.py), and this one with the launcher (launcher.supervise)
    os.environ["TUNEFORGE_AGENT_PID"] = str(os.getpid())
    try:
        run(args)
        return 0
    except ChildFailedError as exc:
        if target:
            _dump(exc.failures, target)
        return 1
    except SignalException as exc:
        # the launcher forwarded SIGTERM; torchrun already passed it on to the ranks and waited
        return 128 + int(exc.sigval)


if __name__ == "__main__":
    sys.exit(main())
