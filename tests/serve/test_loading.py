"""serve/loading.py, the background load both servers share: /ping's status and error, and the
worker's on_failure, for a load that works, one that fails, and one whose error has no text."""

import pytest

from tuneforge.serve.loading import BackgroundLoad


class _State(BackgroundLoad):
    what = "test model"

    def __init__(self, error=None):
        self.error_to_raise, self.loaded, self.seconds = error, False, None

    def load(self):
        if self.error_to_raise is not None:
            raise self.error_to_raise
        self.loaded = True

    def ready(self, seconds):
        self.seconds = seconds


def _run(state):
    failures = []
    state.start_loading(on_failure=failures.append).join(timeout=10)
    return failures


def test_a_load_that_works_is_ready():
    state = _State()
    assert state.status == "loading" and state.error is None
    assert _run(state) == [] and state.status == "ready" and state.loaded and state.seconds >= 0


@pytest.mark.parametrize("error, said", [(OSError("no config.json in /opt/ml/model\nmore detail"),
                                          "no config.json in /opt/ml/model"),
                                         (MemoryError(), "MemoryError")])
def test_a_failed_load_says_its_first_line_and_calls_on_failure(error, said):
    state = _State(error)
    assert _run(state) == [error]
    assert state.status == "failed" and state.error == said and not state.loaded
