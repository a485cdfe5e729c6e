"""What the SageMaker Python SDK really sends, fed to tuneforge.

scripts/sagemaker_launch.py builds its Estimator/Model against a recording client (--dry-run), so
these tests see the exact CreateTrainingJob / CreateModel / InvokeEndpoint requests the SDK would
send, with no AWS account. The hyperparameters are also encoded the way framework estimators
(and Estimator with source_dir) do it: EstimatorBase._json_encode_hyperparameters.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

sagemaker = pytest.importorskip("sagemaker", reason="the SageMaker SDK is a dev dependency: pip install 'sagemaker<3'")

from sagemaker.estimator import EstimatorBase  # noqa: E402

from tuneforge.config import parse_hyperparameters  # noqa: E402
from tuneforge.errors import HyperparameterError  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/tuneforge-train:test"
# Python-typed, as a user writes them in a notebook.
USER_HPS = {"epoch": 1, "max_steps": 6, "learning_rate": 0.005, "instruction_tuned": True,
            "per_device_train_batch_size": 8, "lora_r": 4, "target_modules": "q_proj,v_proj",
            "rouge_samples": 0, "logging_steps": 1, "load_best_model_at_end": False}


@pytest.fixture(scope="module")
def launch():
    spec = importlib.util.spec_from_file_location("sagemaker_launch", REPO / "scripts" / "sagemaker_launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def create_training_job(launch, hyperparameters, **channels) -> dict:
    session = launch.make_session("us-east-1", dry_run=True)
    estimator = launch.make_estimator(IMAGE, ROLE, hyperparameters, session=session,
                                      output_path="s3://bucket/jobs/", instance_count=2)
    estimator.fit(launch.training_inputs(**channels), wait=False)
    calls = session.sagemaker_client.calls
    assert [op for op, _ in calls] == ["create_training_job"]
    return calls[0][1]


def check_config(config):
    assert config.epoch == 1 and config.max_steps == 6
    assert config.learning_rate == pytest.approx(0.005)
    assert config.instruction_tuned is True and config.load_best_model_at_end is False
    assert config.per_device_train_batch_size == 8 and config.lora_r == 4
    assert config.target_modules == "q_proj,v_proj"


def test_generic_estimator_request_parses(launch):
    request = create_training_job(launch, USER_HPS, training="s3://b/train/", validation="s3://b/val/",
                                  model="s3://b/base/")
    hps = request["HyperParameters"]
    assert hps["instruction_tuned"] == "True" and hps["epoch"] == "1"  # str(value), the generic encoding
    check_config(parse_hyperparameters(json.loads(json.dumps(hps))))

    assert request["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert request["ResourceConfig"]["InstanceCount"] == 2
    channels = {c["ChannelName"]: c for c in request["InputDataConfig"]}
    assert set(channels) == {"training", "validation", "model"}
    assert channels["model"]["ContentType"] == "application/x-sagemaker-model"
    assert "DebugHookConfig" not in request
    from tuneforge.contract import METRIC_DEFINITIONS

    assert request["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS


def test_framework_json_encoding_parses():
    encoded = EstimatorBase._json_encode_hyperparameters(USER_HPS)
    assert encoded["instruction_tuned"] == "true" and encoded["target_modules"] == '"q_proj,v_proj"'
    # framework estimators add their own JSON-encoded sagemaker_* keys; they must be ignored
    encoded.update(EstimatorBase._json_encode_hyperparameters({
        "sagemaker_program": "train.py", "sagemaker_submit_directory": "s3://b/src.tar.gz",
        "sagemaker_container_log_level": 20, "sagemaker_region": "us-east-1",
        "sagemaker_job_name": "job-1", "sagemaker_torch_distributed_enabled": True}))
    check_config(parse_hyperparameters(encoded))


def test_jumpstart_style_string_values_parse():
    # JumpStart passes strings ("True", "5") through the same json.dumps: "\"True\"", "\"5\"".
    encoded = EstimatorBase._json_encode_hyperparameters({k: str(v) for k, v in USER_HPS.items()})
    assert encoded["instruction_tuned"] == '"True"' and encoded["epoch"] == '"1"'
    check_config(parse_hyperparameters(encoded))


def test_a_bad_value_in_sdk_encoding_still_fails():
    encoded = EstimatorBase._json_encode_hyperparameters(dict(USER_HPS, epoch=0))
    with pytest.raises(HyperparameterError):
        parse_hyperparameters(encoded)


def test_deploy_and_predict_requests(launch):
    session = launch.make_session("us-east-1", dry_run=True)
    model = launch.make_model(IMAGE.replace("train", "serve"), ROLE, "s3://b/jobs/j/output/model.tar.gz",
                              session=session, env={"SAGEMAKER_MODEL_SERVER_WORKERS": "1"})
    model.deploy(initial_instance_count=1, instance_type="ml.g5.2xlarge", endpoint_name="tf-test", wait=False,
                 container_startup_health_check_timeout=900)
    predictor = launch.make_predictor("tf-test", session=session)
    answer = predictor.predict(launch.jumpstart_payload("What color is the lime?", max_new_tokens=16))
    ops = dict(session.sagemaker_client.calls)
    container = ops["create_model"]["PrimaryContainer"]
    assert container["ModelDataUrl"] == "s3://b/jobs/j/output/model.tar.gz"
    assert container["Environment"] == {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}
    assert ops["create_endpoint_config"]["ProductionVariants"][0]["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    invoke = ops["invoke_endpoint"]
    assert invoke["ContentType"] == "application/json" and invoke["EndpointName"] == "tf-test"
    assert json.loads(invoke["Body"]) == {"inputs": "What color is the lime?", "parameters": {"max_new_tokens": 16}}
    assert isinstance(answer, list) and "generated_text" in answer[0]


def test_cli_dry_run_prints_the_request(launch, capsys):
    assert launch.main(["train", "--dry-run", "--image-uri", IMAGE, "--role", ROLE, "--training", "s3://b/t/",
                        "epoch=2", "instruction_tuned=True"]) == 0
    printed = capsys.readouterr().out
    request = json.loads(printed[printed.index("{"):])["request"]
    assert request["HyperParameters"] == {"epoch": "2", "instruction_tuned": "True"}


@pytest.mark.slow
def test_tuneforge_trains_on_what_the_sdk_sends(launch, job, tiny):
    """hyperparameters.json and the channels exactly as the SDK's CreateTrainingJob names them."""
    request = create_training_job(launch, USER_HPS, training="s3://b/train/", validation="s3://b/val/",
                                  model="s3://b/base/")
    job.add_model(tiny("llama"))
    job.add_sample_data("instruction", train="training", n_train=64, n_val=16)
    names = {c["ChannelName"] for c in request["InputDataConfig"]}
    assert {p.name for p in (job.base / "input" / "data").iterdir()} == names
    (job.base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    result = job.run_cli()
    assert result.returncode == 0, result.stderr[-3000:]
    assert not job.failure.exists()
    assert (job.model_dir / "config.json").exists() and list(job.model_dir.glob("*.safetensors"))
    saved = json.loads((job.model_dir / "tuneforge.json").read_text())
    # the SDK's strings arrived typed: the run honoured them
    assert saved["hyperparameters"]["max_steps"] == 6 and saved["hyperparameters"]["lora_r"] == 4
    assert saved["data_format"] == "instruction"
    assert job.metrics()["steps"] == 6
