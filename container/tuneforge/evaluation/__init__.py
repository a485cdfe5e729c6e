"""Evaluation on the user's own test sets: task files (tasks.py), scores (scoring.py) and
`tuneforge evaluate` (cli.py). docs/evaluation.md."""
