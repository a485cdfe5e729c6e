"""The job runtime beneath the recipes: launcher (contract -> processes, handed the recipes table),
ranks, SIGTERM, checkpoints, resume, artifacts, failure, metric lines. It imports no recipe."""
