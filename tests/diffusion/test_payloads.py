"""Text-to-image request bodies: JumpStart's shapes accepted, everything else refused with a reason."""

import json

import numpy as np
import pytest

from tuneforge.serve.image_payloads import ImageRequestError, Limits, check_response_size, parse, render, wants_jpeg

DEFAULTS = {"width": 64, "height": 64, "num_inference_steps": 50, "guidance_scale": 7.5}
LIMITS = Limits()


def _json(document):
    return parse("application/json", json.dumps(document).encode(), DEFAULTS, LIMITS)


@pytest.mark.parametrize("body", [b"a photo of a dog", b'"a photo of a dog"', b'  a photo of a dog\n'])
def test_text_body_is_the_prompt(body):
    request = parse("application/x-text", body, DEFAULTS, LIMITS)
    assert request.prompts == ["a photo of a dog"] and request.single
    assert (request.width, request.height, request.num_inference_steps) == (64, 64, 50)


def test_json_fields():
    request = _json({"prompt": ["a dog", "a cat"], "width": 48, "height": 32, "num_inference_steps": 3,
                     "guidance_scale": 2, "negative_prompt": "blurry", "num_images_per_prompt": 2, "seed": 7})
    assert request.prompts == ["a dog", "a cat"] and request.negative_prompts == ["blurry", "blurry"]
    assert (request.width, request.height, request.image_count, request.seed) == (48, 32, 4, 7)
    assert _json("a bare JSON string").prompts == ["a bare JSON string"]


@pytest.mark.parametrize("document, message", [
    ({"prompt": "a dog", "width": 60}, "`width` is 60, which is not a multiple of 8"),
    ({"prompt": "a dog", "height": 4096}, "`height` is 4096; it must be from 8 to 1024"),
    ({"prompt": ""}, "`prompt` must be a non-empty string"),
    ({"text_inputs": "a dog"}, "unknown field 'text_inputs'"),
    ({"prompt": "a dog", "seed": "one"}, "`seed` must be an integer"),
    ({"prompt": "a dog", "guidance_scale": None}, "`guidance_scale` must be a number"),
    ({"prompt": ["a", "b"], "negative_prompt": ["x", "y", "z"]}, "3 entries for 2 prompts"),
    ({"prompt": "a dog", "num_images_per_prompt": 9}, "from 1 to 8"),
    ([1, 2], "must be an object"),
])
def test_bad_json_requests(document, message):
    with pytest.raises(ImageRequestError) as caught:
        _json(document)
    assert caught.value.status == 400 and message in caught.value.message


def test_empty_text_malformed_json_and_unknown_type():
    for mimetype, body, status in [("application/x-text", b"  ", 400), ("application/json", b"{", 400),
                                   ("image/png", b"x", 415), ("application/x-text", b"\xff\xfe", 400)]:
        with pytest.raises(ImageRequestError) as caught:
            parse(mimetype, body, DEFAULTS, LIMITS)
        assert caught.value.status == status


@pytest.mark.parametrize("accept, jpeg", [(None, False), ("*/*", False), ("application/json", False),
                                          ("application/json;jpeg", True), ("application/json; jpeg", True),
                                          ("text/html, application/json;jpeg", True)])
def test_accept(accept, jpeg):
    assert wants_jpeg(accept) is jpeg


def test_unacceptable_accept():
    with pytest.raises(ImageRequestError) as caught:
        wants_jpeg("image/png")
    assert caught.value.status == 406 and "application/json;jpeg" in caught.value.message


def test_response_size_is_bounded_before_and_after_generation():
    big = _json({"prompt": "a dog", "width": 1024, "height": 1024})
    with pytest.raises(ImageRequestError) as caught:
        check_response_size(big, LIMITS)
    assert "over the 6 MB response limit" in caught.value.message and "application/json;jpeg" in caught.value.message
    big.jpeg = True
    check_response_size(big, LIMITS)  # JPEG answers are measured once made
    small = _json({"prompt": "a dog", "width": 16, "height": 8})
    body = json.loads(render(small, np.zeros((1, 8, 16, 3), np.uint8), LIMITS))
    assert np.asarray(body["generated_images"]).shape == (1, 8, 16, 3) and body["prompt"] == "a dog"
    with pytest.raises(ImageRequestError):
        render(small, np.zeros((1, 8, 16, 3), np.uint8), Limits(max_response_mb=0.0001))


@pytest.mark.parametrize("mimetype, body, words", [
    ("application/json", b'{"prompt": "a dog", "seed": ' + b"9" * 5000 + b"}", "a number with more than 4300 digits"),
    ("application/json", b'{"prompt": "a dog \\ud800"}', "`prompt` holds a lone UTF-16 surrogate"),
    ("application/json", b'{"prompt": "a dog", "\\udc00": 1}', "`\\udc00` holds a lone UTF-16 surrogate"),
    ("application/x-text", b'"a dog \\ud800"', "`body` holds a lone UTF-16 surrogate"),
])
def test_bodies_python_cannot_hold_as_text_are_refused_in_plain_words(mimetype, body, words):
    with pytest.raises(ImageRequestError) as caught:
        parse(mimetype, body, DEFAULTS, LIMITS)
    assert caught.value.status == 400 and words in caught.value.message
    caught.value.message.encode("utf-8")  # the answer itself is text
