#!/usr/bin/env python3
"""Train and deploy with the tuneforge images on SageMaker (bring-your-own-container).

    # 1. fine-tune: channels training, validation (optional) and model (base weights, optional)
    python scripts/sagemaker_launch.py train \\
        --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/tuneforge-train:0.1.0 \\
        --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --training s3://bucket/data/train/ --validation s3://bucket/data/validation/ \\
        --model s3://bucket/base-models/llama-3-8b/ \\
        --output-path s3://bucket/tuneforge/jobs/ --instance-type ml.g5.12xlarge \\
        epoch=3 learning_rate=0.0002 instruction_tuned=True

    # 2. host what the job wrote (model.tar.gz under the output path)
    python scripts/sagemaker_launch.py deploy \\
        --image-uri 123456789012.dkr.ecr.us-east-1.amazonaws.com/tuneforge-serve:0.1.0 \\
        --role arn:aws:iam::123456789012:role/SageMakerRole \\
        --model-data s3://bucket/tuneforge/jobs/<job>/output/model.tar.gz \\
        --endpoint-name tuneforge-demo --instance-type ml.g5.2xlarge

    # 3. ask it something, in the JumpStart / TGI payload format
    python scripts/sagemaker_launch.py predict --endpoint-name tuneforge-demo \\
        --prompt "What color is the lime?" max_new_tokens=32 temperature=0.2

Every subcommand takes --dry-run: it then builds the same SDK objects against a recording client
and prints the API requests it would send (CreateTrainingJob, CreateModel, ..., InvokeEndpoint)
instead of calling AWS. Needs the SageMaker Python SDK v2 (`pip install 'sagemaker<3'`).

Hyperparameters are KEY=VALUE strings. The generic Estimator sends them as str(value), i.e.
exactly as typed here; tuneforge also accepts the JSON-encoded form framework estimators send.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

DEFAULT_TRAIN_INSTANCE = "ml.g5.2xlarge"
DEFAULT_SERVE_INSTANCE = "ml.g5.2xlarge"
# The metric definitions live beside the code that prints the lines (tuneforge.contract); from a
# checkout without the package installed, they are read from the source tree.
try:
    from tuneforge.contract import metric_definitions
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "container"))
    from tuneforge.contract import metric_definitions


class RecordingClient:
    """Stands in for the boto3 sagemaker / sagemaker-runtime clients in --dry-run: records each
    API call with its arguments and answers with the few fields the SDK reads back."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __getattr__(self, operation: str):
        if operation.startswith("_"):
            raise AttributeError(operation)

        def call(**kwargs):
            self.calls.append((operation, kwargs))
            if operation == "invoke_endpoint":
                import io

                from botocore.response import StreamingBody

                body = b'[{"generated_text": "(dry run: no endpoint was called)"}]'
                return {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"}
            return {"TrainingJobArn": "arn:dry-run", "ModelArn": "arn:dry-run",
                    "EndpointConfigArn": "arn:dry-run", "EndpointArn": "arn:dry-run"}

        return call


def make_session(region: str | None, dry_run: bool):
    """A sagemaker.Session; with dry_run, one whose API calls are recorded, not sent."""
    import boto3
    import sagemaker

    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    boto_session = boto3.Session(region_name=region)
    if not dry_run:
        return sagemaker.Session(boto_session=boto_session)
    recorder = RecordingClient()
    no_telemetry = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
    return sagemaker.Session(boto_session=boto_session, sagemaker_client=recorder,
                             sagemaker_runtime_client=recorder, default_bucket="dry-run-bucket",
                             sagemaker_config=no_telemetry)


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"expected KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        out[key] = value
    return out


# --- training -------------------------------------------------------------------------------------
def training_inputs(training: str, validation: str | None = None, model: str | None = None) -> dict:
    """The channels tuneforge reads: training (or train), validation, and model (base weights)."""
    from sagemaker.inputs import TrainingInput

    channels = {"training": TrainingInput(training, distribution="FullyReplicated")}
    if validation:
        channels["validation"] = TrainingInput(validation, distribution="FullyReplicated")
    if model:
        # JumpStart's own content type for the base-model channel.
        channels["model"] = TrainingInput(model, distribution="FullyReplicated",
                                          content_type="application/x-sagemaker-model")
    return channels


def make_estimator(image_uri: str, role: str, hyperparameters: dict[str, Any], *, session,
                   instance_type: str = DEFAULT_TRAIN_INSTANCE, instance_count: int = 1,
                   output_path: str | None = None, checkpoint_s3_uri: str | None = None,
                   volume_size: int = 200, max_run_hours: float = 24, spot: bool = False,
                   uncompressed_output: bool = False, environment: dict[str, str] | None = None):
    """A generic Estimator for the tuneforge-train image (BYOC: no source_dir, no entry point)."""
    from sagemaker.estimator import Estimator

    max_run = int(max_run_hours * 3600)
    return Estimator(
        image_uri=image_uri,
        role=role,
        instance_count=instance_count,
        instance_type=instance_type,
        volume_size=volume_size,
        max_run=max_run,
        use_spot_instances=spot,
        max_wait=max_run if spot else None,
        # Resumable state goes to /opt/ml/checkpoints and is synced here (needed for spot).
        checkpoint_s3_uri=checkpoint_s3_uri,
        output_path=output_path,
        # Large models: upload /opt/ml/model as files instead of one model.tar.gz.
        disable_output_compression=uncompressed_output,
        hyperparameters=hyperparameters,
        environment=environment or {},
        metric_definitions=metric_definitions(hyperparameters.get("training_method")),  # sft: no reward lines
        # The image has no SageMaker Debugger hooks; don't configure them.
        debugger_hook_config=False,
        disable_profiler=True,
        sagemaker_session=session,
    )


# --- hosting ------------------------------------------------------------------------------------
def make_model(image_uri: str, role: str, model_data: str, *, session, env: dict[str, str] | None = None):
    """A Model for the tuneforge-serve image; SageMaker unpacks model_data into /opt/ml/model."""
    from sagemaker.model import Model
    from sagemaker.predictor import Predictor

    return Model(image_uri=image_uri, model_data=model_data, role=role, env=env or {},
                 predictor_cls=Predictor, sagemaker_session=session)


def jumpstart_payload(prompt: str, **parameters: Any) -> dict:
    """The JumpStart / TGI request body: {"inputs": ..., "parameters": {...}}."""
    return {"inputs": prompt, "parameters": parameters}


def make_predictor(endpoint_name: str, *, session):
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer

    return Predictor(endpoint_name, sagemaker_session=session, serializer=JSONSerializer(),
                     deserializer=JSONDeserializer())


def _typed(value: str) -> Any:
    """predict's KEY=VALUE generation parameters: numbers and booleans as JSON types."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


# --- command line -------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--region", help="AWS region (default: AWS_REGION or us-east-1)")
    common.add_argument("--dry-run", action="store_true", help="print the API requests instead of sending them")

    t = sub.add_parser("train", parents=[common], help="start a training job")
    t.add_argument("--image-uri", required=True, help="ECR URI of the tuneforge-train image")
    t.add_argument("--role", required=True, help="SageMaker execution role ARN")
    t.add_argument("--training", required=True, help="S3 prefix of the training data")
    t.add_argument("--validation", help="S3 prefix of validation data (else validation_split_ratio)")
    t.add_argument("--model", help="S3 prefix of the base model (config, safetensors, tokenizer)")
    t.add_argument("--output-path", help="S3 prefix for model.tar.gz and output.tar.gz")
    t.add_argument("--checkpoint-s3-uri", help="S3 prefix synced with /opt/ml/checkpoints")
    t.add_argument("--instance-type", default=DEFAULT_TRAIN_INSTANCE)
    t.add_argument("--instance-count", type=int, default=1, help="> 1: multi-node (torchrun across hosts)")
    t.add_argument("--volume-size", type=int, default=200, help="GB of /opt/ml storage")
    t.add_argument("--max-run-hours", type=float, default=24)
    t.add_argument("--spot", action="store_true", help="managed spot training (resumes from checkpoints)")
    t.add_argument("--uncompressed-output", action="store_true",
                   help="upload /opt/ml/model as files, not model.tar.gz (large models)")
    t.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    t.add_argument("hyperparameters", nargs="*", metavar="KEY=VALUE")

    d = sub.add_parser("deploy", parents=[common], help="create a model and a real-time endpoint")
    d.add_argument("--image-uri", required=True, help="ECR URI of the tuneforge-serve image")
    d.add_argument("--role", required=True)
    d.add_argument("--model-data", required=True, help="S3 URI of model.tar.gz written by a training job")
    d.add_argument("--endpoint-name", required=True)
    d.add_argument("--instance-type", default=DEFAULT_SERVE_INSTANCE)
    d.add_argument("--startup-timeout", type=int, default=900,
                   help="seconds SageMaker waits for /ping to answer 200 (60-3600)")
    d.add_argument("env", nargs="*", metavar="KEY=VALUE", help="container environment")

    q = sub.add_parser("predict", parents=[common], help="send one prompt to an endpoint")
    q.add_argument("--endpoint-name", required=True)
    q.add_argument("--prompt", required=True)
    q.add_argument("parameters", nargs="*", metavar="KEY=VALUE", help="generation parameters, e.g. max_new_tokens=64")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    session = make_session(args.region, args.dry_run)

    if args.command == "train":
        estimator = make_estimator(
            args.image_uri, args.role, parse_pairs(args.hyperparameters), session=session,
            instance_type=args.instance_type, instance_count=args.instance_count,
            output_path=args.output_path or ("s3://dry-run-bucket/tuneforge/jobs/" if args.dry_run else None),
            checkpoint_s3_uri=args.checkpoint_s3_uri, volume_size=args.volume_size,
            max_run_hours=args.max_run_hours, spot=args.spot, uncompressed_output=args.uncompressed_output)
        estimator.fit(training_inputs(args.training, args.validation, args.model),
                      wait=args.wait and not args.dry_run, logs="All")
        if not args.dry_run:
            job = estimator.latest_training_job.name
            print(f"training job {job}; model: {estimator.output_path.rstrip('/')}/{job}/output/model.tar.gz")
    elif args.command == "deploy":
        model = make_model(args.image_uri, args.role, args.model_data, session=session, env=parse_pairs(args.env))
        model.deploy(initial_instance_count=1, instance_type=args.instance_type,
                     endpoint_name=args.endpoint_name,
                     container_startup_health_check_timeout=args.startup_timeout,
                     wait=not args.dry_run)
        if not args.dry_run:
            print(f"endpoint {args.endpoint_name} is InService")
    else:
        predictor = make_predictor(args.endpoint_name, session=session)
        params = {k: _typed(v) for k, v in parse_pairs(args.parameters).items()}
        answer = predictor.predict(jumpstart_payload(args.prompt, **params))
        print(json.dumps(answer, indent=2))

    if args.dry_run:
        for operation, request in session.sagemaker_client.calls:
            print(json.dumps({"operation": operation, "request": request}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
