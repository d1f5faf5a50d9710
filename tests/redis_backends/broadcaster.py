"""A child process of the broadcast test: one bot instance sending its share of a broadcast.

python broadcaster.py REDIS_URL PREFIX SEND_URL CHAT_IDS SHARE

Builds ``FloodControl(budget=RedisFloodBudget(...))`` as a bot instance would,
prints ``ready``, waits for a line on stdin, sends one message to each chat in
CHAT_IDS (comma-separated) through the simulator, then prints
``sent start end`` (wall-clock seconds).
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import redis

from botscale import ApiFailure, FailureKind, FloodControl, OutgoingRequest
from botscale._telegram import classify_api_answer
from botscale.backends.redis import RedisFloodBudget


class ApiError(Exception):
    def __init__(self, status: int, payload: dict[str, Any] | None) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload


def classify(exc: BaseException) -> ApiFailure | None:
    if isinstance(exc, ApiError):
        return classify_api_answer(exc.status, exc.payload)
    if isinstance(exc, OSError):
        return ApiFailure(FailureKind.NETWORK, description=str(exc))
    return None


def send_message(url: str, chat_id: int) -> Any:
    body = json.dumps({"chat_id": chat_id, "text": "news"}).encode()
    request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as error:
        raise ApiError(error.code, json.load(error)) from None


def main(redis_url: str, prefix: str, send_url: str, chat_ids: list[int], share: float) -> int:
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0)
    flood = FloodControl(budget=RedisFloodBudget(client, prefix=prefix, local_share=share))
    client.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    for chat_id in chat_ids:
        flood.call(
            OutgoingRequest("sendMessage", chat_id),
            lambda chat_id=chat_id: send_message(send_url, chat_id),  # type: ignore[misc]
            classify=classify,
            timeout=60.0,
        )
    print(flood.stats().sent, start, time.time(), flush=True)
    return 0


if __name__ == "__main__":
    url, prefix, send_url, ids, share = sys.argv[1:6]
    raise SystemExit(main(url, prefix, send_url, [int(i) for i in ids.split(",")], float(share)))
