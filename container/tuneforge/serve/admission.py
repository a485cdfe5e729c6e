"""Admission by queueing delay, for both engines.

When the requests already waiting for their first token have waited past half the deadline, a
new non-streaming request would most likely wait past it too, and be answered 503 a deadline
later having held a slot all along. It is refused at once instead: 429 with a Retry-After of the
current wait, which clients (and SageMaker's SDK) honour. Streams have no deadline and are
admitted while the queue has room.
"""

from __future__ import annotations

import math

from .errors import Overloaded

SHED_SHARE = 0.5  # of the request deadline, waited by the oldest request not yet started


def admit(request, oldest_wait_s: float | None, deadline_s: float) -> None:
    """Raise Overloaded when `request` (with a deadline) should not join a queue whose oldest
    unstarted request has waited `oldest_wait_s` seconds (None: nothing waits)."""
    if request.deadline is None or oldest_wait_s is None or oldest_wait_s <= SHED_SHARE * deadline_s:
        return
    raise Overloaded(
        f"requests here wait {oldest_wait_s:.0f} s before generation starts, past half the {deadline_s:g} s "
        "deadline (TUNEFORGE_REQUEST_DEADLINE): retry later, raise the deadline, add workers or instances, or "
        "stream the answer", retry_after=math.ceil(oldest_wait_s))
