"""The Yandex status tracker with a scripted list function and the in-memory store: one list
call per counter per pass, statuses published once, resumption from the store (a restart),
and the tracking limit."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from streams.sinks.yandex.sink import status_record
from streams.sinks.yandex.status_tracker import MemoryOpenUploads, OpenUpload, UploadStatusTracker


class Metrica:
    """Answers list calls from a dict of counter -> {upload id: status}."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []
        self.down = False

    async def list_uploadings(self, counter: str) -> Sequence[Mapping[str, Any]] | None:
        self.calls.append(counter)
        if self.down:
            return None
        return [
            {"id": int(upload_id), "status": status, "line_quantity": 1, "linked_quantity": 1}
            for upload_id, status in self.statuses.get(counter, {}).items()
        ]


def tracker(
    metrica: Metrica, store: MemoryOpenUploads, published: list[dict[str, Any]], now: list[float]
) -> UploadStatusTracker:
    async def publish(record: dict[str, Any]) -> None:
        published.append(record)

    return UploadStatusTracker(
        metrica.list_uploadings,
        store,
        status_record,
        on_status=publish,
        max_tracking_seconds=3600,
        clock=lambda: now[0],
    )


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 10))


def test_one_list_call_per_counter_and_each_status_once() -> None:
    async def scenario() -> tuple[Metrica, list[dict[str, Any]], UploadStatusTracker]:
        metrica, store, published, now = Metrica(), MemoryOpenUploads(), [], [1000.0]
        t = tracker(metrica, store, published, now)
        await t.start()
        for n, counter in enumerate(["1", "1", "1", "2"]):
            await t.add(OpenUpload(counter, str(100 + n), f"b{n}", now[0]))
        metrica.statuses = {"1": {"100": "PROCESSED", "101": "UPLOADED", "102": "LINKAGE_FAILURE"}}
        assert await t.poll_once() == 2
        assert sorted(metrica.calls) == ["1", "2"]
        assert len(t) == 2  # 101 still processing, 103 not listed yet
        metrica.statuses = {"1": {"101": "PROCESSED"}, "2": {"103": "PROCESSED"}}
        assert await t.poll_once() == 2
        assert await t.poll_once() == 0  # nothing open: no call at all
        return metrica, published, t

    _metrica, published, t = run(scenario())
    assert sorted(r["upload_id"] for r in published) == ["100", "101", "102", "103"]
    assert len(t) == 0


def test_a_new_tracker_on_the_same_store_resumes_the_open_uploads() -> None:
    async def scenario() -> list[dict[str, Any]]:
        metrica, store, published, now = Metrica(), MemoryOpenUploads(), [], [1000.0]
        first = tracker(metrica, store, published, now)
        await first.start()
        await first.add(OpenUpload("1", "100", "b0", now[0]))
        metrica.down = True
        await first.poll_once()
        second = tracker(metrica, store, published, now)  # the restart
        await second.start()
        assert len(second) == 1
        metrica.down = False
        metrica.statuses = {"1": {"100": "PROCESSED"}}
        await second.poll_once()
        third = tracker(metrica, store, published, now)
        await third.start()
        assert len(third) == 0  # closed in the store once published
        return published

    assert [r["batch_id"] for r in run(scenario())] == ["b0"]


def test_an_upload_never_listed_final_is_dropped_after_the_limit() -> None:
    async def scenario() -> tuple[int, list[dict[str, Any]], MemoryOpenUploads]:
        metrica, store, published, now = Metrica(), MemoryOpenUploads(), [], [1000.0]
        t = tracker(metrica, store, published, now)
        await t.start()
        await t.add(OpenUpload("1", "100", "b0", now[0]))
        await t.poll_once()
        assert len(t) == 1
        now[0] += 3601
        await t.poll_once()
        return len(t), published, store

    left, published, store = run(scenario())
    assert left == 0
    assert published == []
    assert store.uploads == {}


async def test_a_tracker_follows_only_its_own_logins_uploads_and_legacy_ones() -> None:
    """With several credential sets the open-uploads topic holds every set's uploads;
    a sink can read only its own token's (another's list call would be refused), so each
    tracker resumes those of its login plus the records written before logins were kept."""
    store = MemoryOpenUploads()
    for n, login in enumerate(("aaaa1111", "bbbb2222", "")):
        await store.opened(OpenUpload("44147844", f"u{n}", f"b{n}", 0.0, login))
    tracker = UploadStatusTracker(_no_list, store, _no_record, owner="aaaa1111")
    await tracker.start()
    assert sorted(u.upload_id for u in tracker._open.values()) == ["u0", "u2"]
    assert OpenUpload.decode(OpenUpload("1", "u", "b", 0.0, "aaaa1111").encode()) == OpenUpload(
        "1", "u", "b", 0.0, "aaaa1111"
    )
    assert b"login" not in OpenUpload("1", "u", "b", 0.0).encode()  # old readers unaffected


async def _no_list(_counter: str) -> None:
    raise AssertionError("no list call expected")


def _no_record(*_args: object) -> dict[str, object]:
    raise AssertionError("no record expected")
