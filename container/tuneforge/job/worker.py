"""One rank of a torchrun launch: run the recipe, leave this rank's error for the launcher.

torchrun starts `python -m tuneforge.recipes` (the module the launcher's Recipes table names),
which calls main() here with that table; the launcher's handoff names the recipe."""

from __future__ import annotations

import os
import traceback

from ..contract import Paths, train_env
from . import job_config, ranks, stopping


def main(recipes) -> int:
    """recipes: job/launcher.py's Recipes table (tuneforge/recipes.py's)."""
    from .process import configure_logging, die_with_parent, failure_text

    # torchrun starts ranks in sessions of their own and does not stop them if it is killed itself
    die_with_parent(train_env().agent_pid or None)
    from .distributed import placement, teardown

    configure_logging()
    paths = Paths.from_env()
    rank = placement().rank
    stopping.install(marker=stopping.stop_marker(paths))
    ok = False
    try:
        raw, config, entry = job_config.recipe_config(paths, recipes)  # the launcher's parsed values
        entry.run(paths, config, raw)
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
