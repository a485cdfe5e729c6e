"""The job's hyperparameters, read and parsed once, by the launcher.

The launcher validates hyperparameters.json into its recipe's frozen config (TrainConfig, or the
text-to-image DreamBoothConfig) and writes the parsed values for the processes it starts
(torchrun's ranks, the isolated single process) to a file whose path their environment holds
(TUNEFORGE_JOB_CONFIG). They load those values instead of reading and parsing the user's file
again, so every process trains on the launcher's values and a problem is reported once.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from ..contract import Paths, train_env

ENV = "TUNEFORGE_JOB_CONFIG"


@dataclass(frozen=True)
class JobConfig:
    raw: dict  # hyperparameters.json as written (metrics.json and the diffusion check read it)
    values: dict  # the parsed config's fields
    fields_set: tuple[str, ...] = ()
    kind: str | None = None  # the recipe (job/launcher.py's RecipeEntry.kind) the launcher picked

    def config(self, schema):
        """The launcher's parsed config as `schema`, without validating it again."""
        return schema.model_construct(_fields_set=set(self.fields_set), **self.values)


def handed_down() -> JobConfig | None:
    """The config the launcher handed to this process; None in the launcher itself."""
    path = train_env().job_config
    if path is None:
        return None
    saved = json.loads(Path(path).read_text())
    return JobConfig(saved["raw"], saved["values"], tuple(saved["fields_set"]), saved.get("kind"))


def recipe_config(paths: Paths, recipes):
    """(raw hyperparameters, config, recipe entry): the launcher's, else read, picked and parsed here."""
    job = handed_down()
    if job is not None:
        entry = recipes.pick(paths, job.raw, job.kind)
        return job.raw, job.config(entry.config_type), entry
    raw = paths.read_hyperparameters()
    entry = recipes.pick(paths, raw)
    return raw, entry.parse(raw), entry


@contextlib.contextmanager
def handed(paths: Paths, raw: dict, config, kind: str | None = None):
    """Write `config` for this launcher's children, yield their environment, remove the file after.
    Named after this host and process: launchers sharing one base folder never share a file."""
    path = paths.parsed_config_file(f"{socket.gethostname()}-{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {"raw": raw, "values": config.model_dump(mode="json"), "fields_set": sorted(config.model_fields_set),
             "kind": kind}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved))
    os.replace(tmp, path)
    try:
        yield {ENV: str(path)}
    finally:
        path.unlink(missing_ok=True)
