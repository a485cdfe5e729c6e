"""`tuneforge train|serve|check-job|convert|tiny-model|sample-data|report|hyperparameters|evaluate|
metric-definitions`; `serve` console script."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _train(args) -> int:
    from .recipes import run

    return run(args.base_dir, isolate=True)


def _serve(args, rest: list[str]) -> int:
    from .serve.server import main as serve_main

    return serve_main(rest)


def _tiny_model(args) -> int:
    from transformers.utils import logging as transformers_logging

    from .logs import quiet_known_noise
    from .tiny import build_tiny_model

    quiet_known_noise()  # DeepSpeed's "Setting accelerator to CPU" on import, among others
    transformers_logging.disable_progress_bar()  # one shard of a few hundred kB needs no progress bar
    for family in args.family:
        out = Path(args.output) / family if len(args.family) > 1 else Path(args.output)
        if family == "stable-diffusion":  # a diffusers pipeline, not a language model
            from .diffusion.tiny import build_tiny_pipeline

            build_tiny_pipeline(out)
        else:
            build_tiny_model(family, out)
        print(out)
    return 0


def _sample_data(args) -> int:
    from .samples import write_sample_data

    for name, folder in write_sample_data(args.kind, Path(args.output), n_train=args.rows).items():
        print(f"{name}: {folder}")
    return 0


def _check_job(args) -> int:
    """The job's config files, read as the job reads them; output/failure on a problem. The train
    image's entrypoint runs this before sagemaker-training's `train`, which reads
    hyperparameters.json itself and would fail on a non-object with an error of its own."""
    from .contract import Paths, archive_failure, write_failure
    from .errors import UserError

    paths = Paths.from_env(args.base_dir)
    try:
        raw = paths.read_hyperparameters()
        paths.read_resource_config()
        _check_job_inputs(paths, raw)
    except UserError as exc:
        archive_failure(paths)
        write_failure(paths, f"{exc.__class__.__name__}: {exc}")
        print(f"{exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


def _check_job_inputs(paths, raw: dict) -> None:
    """What the job itself checks before it loads a model: the hyperparameters, the channel layout,
    the data (format, templates, rows) and the evaluation task files; the first problem raises."""
    from .config import parse_hyperparameters
    from .data import read_job_channels
    from .diffusion import is_text_to_image_job
    from .evaluation.tasks import load_tasks

    if is_text_to_image_job(paths, raw):  # its own hyperparameters, channels and images
        from .diffusion.config import parse_diffusion_hyperparameters
        from .diffusion.data import read_channel
        from .diffusion.job import check_channels

        config = parse_diffusion_hyperparameters(raw)
        check_channels(paths, config)
        read_channel(paths.train_channel(), with_prior_preservation=config.with_prior_preservation)
        return
    read_job_channels(paths, parse_hyperparameters(raw))
    if paths.evaluation_channel() is not None:
        load_tasks(paths.evaluation_channel())


def _convert(args) -> int:
    from .gguf import convert_gguf

    print(convert_gguf(Path(args.gguf), Path(args.output)))
    return 0


def _report(args) -> int:
    """report.html + report.md for one job, or compare.html + compare.md for several."""
    from .errors import UserError
    from .report import write_comparison, write_report

    try:
        if args.compare:
            written = write_comparison(args.jobs, args.out or ".")
        else:  # each job's own report; with --out and several jobs, one subfolder per job
            written = []
            for number, job in enumerate(args.jobs, 1):
                out = Path(args.out) / f"job-{number}" if args.out and len(args.jobs) > 1 else args.out
                written += write_report(job, out)
    except UserError as exc:
        print(f"{exc.__class__.__name__}: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _hyperparameters(args) -> int:
    from .config import markdown_table

    header = ("# Hyperparameters\n\nGenerated from container/tuneforge/config.py and diffusion/config.py by "
              "`tuneforge hyperparameters --markdown`. Values may arrive in any SageMaker encoding "
              "(\"True\", \"true\", \"\\\"True\\\"\", \"5\", \"\\\"5\\\"\"); names starting with `sagemaker_` "
              "are ignored; an unknown name fails with the closest valid one.\n\n")
    from .diffusion.config import markdown_table as diffusion_table

    table = markdown_table() + "\n" + diffusion_table()
    print(header + table if args.markdown else table, end="")
    return 0


def _evaluate(args) -> int:
    from .evaluation.cli import main as evaluate_main

    return evaluate_main(args)


def _metric_definitions(args) -> int:
    from .evaluation.cli import metric_definitions_main

    return metric_definitions_main(args)


def parser() -> argparse.ArgumentParser:
    from .tiny import FAMILIES

    top = argparse.ArgumentParser(prog="tuneforge", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="run a training job on an /opt/ml-shaped folder")
    train.add_argument("--base-dir", help="the /opt/ml tree (default: $SAGEMAKER_BASE_DIR or /opt/ml)")
    train.set_defaults(func=_train)
    serve = sub.add_parser("serve", help="serve model/ over HTTP (gunicorn); options: tuneforge serve --help",
                           add_help=False)
    serve.set_defaults(func=None)
    tiny = sub.add_parser("tiny-model", help="write a tiny random model with an offline tokenizer")
    tiny.add_argument("--family", nargs="+", default=["llama"], choices=(*FAMILIES, "stable-diffusion"))
    tiny.add_argument("--output", required=True)
    tiny.set_defaults(func=_tiny_model)
    sample = sub.add_parser("sample-data", help="write sample train/validation channels")
    sample.add_argument("--kind", default="instruction", choices=("instruction", "chat", "domain", "table", "tickets",
                                                                  "ticket-preferences"))
    sample.add_argument("--rows", type=int, default=320)
    sample.add_argument("--output", required=True)
    sample.set_defaults(func=_sample_data)
    check = sub.add_parser("check-job", help="check a job's inputs as the job does, without loading a model: "
                           "hyperparameters.json, resourceconfig.json, the data, the evaluation tasks")
    check.add_argument("--base-dir", help="the /opt/ml tree (default: $SAGEMAKER_BASE_DIR or /opt/ml)")
    check.set_defaults(func=_check_job)
    convert = sub.add_parser("convert", help="write a Hugging Face safetensors folder from a .gguf file")
    convert.add_argument("--gguf", required=True, help="the .gguf file (dequantized to float32)")
    convert.add_argument("--output", required=True, help="the folder to write")
    convert.set_defaults(func=_convert)
    report = sub.add_parser("report", help="write a job's run report (report.html, report.md), or compare jobs")
    report.add_argument("jobs", nargs="+", metavar="JOB_DIR",
                        help="a job folder (/opt/ml), its output/data folder, or model.tar.gz / output.tar.gz")
    report.add_argument("--compare", action="store_true",
                        help="put two or more jobs side by side (compare.html, compare.md)")
    report.add_argument("--out", help="folder to write to (default: the job's output/data, or . for --compare)")
    report.set_defaults(func=_report)
    evaluate = sub.add_parser("evaluate", help="score a model folder or a served model on task files "
                              "(docs/evaluation.md)")
    evaluate.add_argument("--model-dir", required=True, help="a model folder (training's model/, or plain HF), or "
                          "a tuneforge server's URL (http://host:port)")
    evaluate.add_argument("--tasks", required=True, help="a folder of <task>.jsonl files (and lm-eval task YAMLs)")
    evaluate.add_argument("--compare-to", help="another model folder or server URL (e.g. the base) scored on the "
                          "same tasks")
    evaluate.add_argument("--min-score", help="gate: task=score pairs, e.g. tickets=0.9,general=0.5")
    evaluate.add_argument("--max-regression", type=float,
                          help="gate: points any task may lose against --compare-to, e.g. 0.02")
    evaluate.add_argument("--max-new-tokens", type=int, default=64, help="longest answer of generation items")
    evaluate.add_argument("--json", help="also write the scores and every item's details to this file")
    evaluate.set_defaults(func=_evaluate)
    definitions = sub.add_parser("metric-definitions", help="print SageMaker MetricDefinitions (JSON) for the job's "
                                 "metric lines, with --tasks each evaluation task's too")
    definitions.add_argument("--tasks", help="the evaluation channel's folder of task files")
    definitions.add_argument("--tasks-only", action="store_true", help="only the tasks' definitions")
    definitions.add_argument("--method", choices=("sft", "dpo", "orpo", "simpo", "kto"),
                             help="the job's training_method: sft leaves out the preference methods' reward lines")
    definitions.set_defaults(func=_metric_definitions)
    hps = sub.add_parser("hyperparameters", help="print the hyperparameter reference")
    hps.add_argument("--markdown", action="store_true", help="with a document header")
    hps.set_defaults(func=_hyperparameters)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "serve":
        return _serve(None, argv[1:])
    args = parser().parse_args(argv)
    return args.func(args)


def serve_entry() -> None:
    """The `serve` console script SageMaker runs in the serving image."""
    from .serve.server import main as serve_main

    sys.exit(serve_main(sys.argv[1:]))


if __name__ == "__main__":
    sys.exit(main())
