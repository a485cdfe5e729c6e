"""`serve` on a diffusers pipeline, over HTTP through real gunicorn: JumpStart's text-to-image contract."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
import requests

from tests.serve.conftest import Server

FAST = {"num_inference_steps": 2}


@pytest.fixture(scope="module")
def image_server(sd_base, tmp_path_factory):
    log = tmp_path_factory.mktemp("sd-serve") / "serve.log"
    server = Server(sd_base, log, env={"TUNEFORGE_MAX_RESPONSE_MB": "1"}).wait_ready()
    yield server
    assert server.stop() == 0


def _post_json(server, document, accept=None):
    headers = {"Accept": accept} if accept else {}
    return server.post(json=document, headers=headers)


def _jpeg_size(encoded: str) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(encoded))) as image:
        assert image.format == "JPEG"
        return image.size


def test_text_prompt_gives_one_image_of_the_model_size(image_server):
    response = image_server.post(data="a photo of a doppler dog", headers={"Content-Type": "application/x-text"})
    assert response.status_code == 200, response.text
    body = response.json()
    image = np.asarray(body["generated_image"])
    assert image.shape == (64, 64, 3) and image.dtype.kind == "i" and 0 <= image.min() <= image.max() <= 255
    assert body["prompt"] == "a photo of a doppler dog"


def test_json_sizes_and_counts_in_pixels_and_jpeg(image_server):
    document = {"prompt": ["a dog", "a cat"], "width": 48, "height": 32, "num_images_per_prompt": 2, "seed": 3, **FAST}
    pixels = _post_json(image_server, document)
    assert pixels.status_code == 200, pixels.text
    assert np.asarray(pixels.json()["generated_images"]).shape == (4, 32, 48, 3)
    assert pixels.json()["prompt"] == ["a dog", "a cat"]
    jpeg = _post_json(image_server, {**document, "width": 80, "height": 24}, accept="application/json;jpeg")
    assert jpeg.status_code == 200, jpeg.text
    assert [_jpeg_size(image) for image in jpeg.json()["generated_images"]] == [(80, 24)] * 4


def test_same_seed_same_image(image_server):
    document = {"prompt": "a photo of a doppler dog", "seed": 11, "negative_prompt": "blurry", **FAST}
    first, second = (_post_json(image_server, document).json()["generated_images"] for _ in range(2))
    other = _post_json(image_server, {**document, "seed": 12}).json()["generated_images"]
    assert first == second and first != other


@pytest.mark.parametrize("document, status, words", [
    ({"prompt": "a dog", "width": 60}, 400, "`width` is 60, which is not a multiple of 8"),
    ({"prompt": "a dog", "width": 512, "height": 512}, 400, "over the 1 MB response limit"),
    ({"inputs": "a dog"}, 400, "unknown field 'inputs'"),
])
def test_bad_requests_are_explained(image_server, document, status, words):
    response = _post_json(image_server, document)
    assert response.status_code == status and words in response.json()["error"]


def test_language_model_routes_say_what_is_served(image_server):
    response = image_server.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert "serves a text-to-image model" in response.json()["error"]
    assert response.json()["error_type"] == "wrong_model_kind"
    assert requests.get(image_server.url + "/v1/models", timeout=10).status_code == 400


def test_unacceptable_accept_and_info(image_server):
    response = _post_json(image_server, {"prompt": "a dog"}, accept="image/png")
    assert response.status_code == 406 and "application/json;jpeg" in response.json()["error"]
    info = requests.get(image_server.url + "/info", timeout=10).json()
    assert info["task"] == "text-to-image" and info["defaults"]["width"] == 64


def test_sagemaker_sdk_serializers_round_trip(image_server, monkeypatch):
    """The SDK's own Predictor, serializers and runtime client, against the real server."""
    sagemaker = pytest.importorskip("sagemaker")
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.local import LocalSession, local_session
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import IdentitySerializer, JSONSerializer

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    # the local runtime client looks for the endpoint where docker runs; the server is on loopback
    monkeypatch.setattr(local_session, "get_docker_host", lambda: "127.0.0.1")
    session = LocalSession()
    session.config = {"local": {"local_code": True, "serving_port": image_server.port}}
    predictor = Predictor("tuneforge-sd", sagemaker_session=session, serializer=JSONSerializer(),
                          deserializer=JSONDeserializer())
    answer = predictor.predict({"prompt": "a photo of a doppler dog", "width": 32, "height": 40, "seed": 1, **FAST})
    assert np.asarray(answer["generated_images"]).shape == (1, 40, 32, 3)
    jpeg = predictor.predict({"prompt": "a dog", "width": 32, "height": 40, "seed": 1, **FAST},
                             initial_args={"Accept": "application/json;jpeg"})
    assert _jpeg_size(jpeg["generated_images"][0]) == (32, 40)
    text = Predictor("tuneforge-sd", sagemaker_session=session,
                     serializer=IdentitySerializer(content_type="application/x-text"), deserializer=JSONDeserializer())
    answer = text.predict("a photo of a doppler dog".encode())
    assert np.asarray(answer["generated_image"]).shape == (64, 64, 3)
    assert answer["prompt"] == "a photo of a doppler dog"
    assert sagemaker.__version__.startswith("2.")


@pytest.mark.slow
def test_a_trained_pipeline_is_served_as_the_job_drew_it(trained_job, tmp_path):
    """What `train` wrote, `serve` serves: the same seed gives the job's own "after" picture."""
    from PIL import Image

    server = Server(trained_job.model_dir, tmp_path / "serve.log").wait_ready()
    try:
        metrics = trained_job.metrics()
        document = {"prompt": metrics["instance_prompt"], "seed": 0, "num_images_per_prompt": 2, **FAST}
        response = _post_json(server, document)
        assert response.status_code == 200, response.text
        served = np.asarray(response.json()["generated_images"])
        after = np.stack([np.asarray(Image.open(trained_job.base / "output" / "data" / name))
                          for name in metrics["images"]["after"]])
        assert served.shape == after.shape == (2, 64, 64, 3)
        assert int(np.abs(served - after.astype(int)).max()) <= 1
        info = requests.get(server.url + "/info", timeout=10).json()
        assert info["instance_prompt"] == metrics["instance_prompt"]
    finally:
        assert server.stop() == 0


def test_a_deadline_503_says_what_this_caller_can_change(sd_base, tmp_path):
    """An application/x-text prompt cannot set num_inference_steps: its 503 says to send JSON."""
    server = Server(sd_base, tmp_path / "serve.log", env={"TUNEFORGE_REQUEST_DEADLINE": "0.001"}).wait_ready()
    try:
        text = server.post(data="a photo of a dog", headers={"Content-Type": "application/x-text"})
        assert text.status_code == 503 and text.json()["error_type"] == "timeout"
        assert 'send the prompt as JSON ({"prompt": "...", "num_inference_steps": 20' in text.json()["error"]
        document = _post_json(server, {"prompt": "a dog", "num_inference_steps": 3})
        assert document.status_code == 503
        assert "ask for fewer steps (num_inference_steps), fewer or smaller images" in document.json()["error"]
    finally:
        assert server.stop() == 0
