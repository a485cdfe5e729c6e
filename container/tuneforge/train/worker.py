"""One rank of a torchrun launch: run the recipe, leave this rank's error for the launcher."""

from __future__ import annotations

import os
import sys
import traceback

from ..contract import Paths, train_env
from . import job_config, ranks, stopping


def main() -> int:
    from .process import configure_logging, die_with_parent, failure_text

    # torchrun starts ranks in sessions of their own and does not stop them if it is killed itself
    die_with_parent(train_env().agent_pid or None)
    from .distributed import placement, teardown
    from .recipe import Recipe

    configure_logging()
    paths = Paths.from_env()
    rank = placement().rank
    stopping.install(marker=stopping.stop_marker(paths))
    ok = False
    try:
        raw, config = job_config.train_config(paths)  # the launcher's parsed values
        Recipe(paths, config, raw).run()
        ok = True
        return 0
    except stopping.TornDown:
        # torchrun is ending the group because another rank failed: that rank reports the cause
        os._exit(143)
    except BaseException as exc:  # noqa: BLE001
        text = failure_text(exc)
        ranks.write_rank_error(paths, rank, text)
        if not isinstance(exc, stopping.Stopped):
            traceback.print_exc()
        return 143 if isinstance(exc, stopping.Stopped) else 1
    finally:
        teardown(wait_for_peers=ok)


if __name__ == "__main__":
    sys.exit(main())
