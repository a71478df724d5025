"""Faust calls ``App.on_rebalance_start`` from its aiokafka consumer thread, which runs an
event loop of its own; convstream's flush hooks must still run on the app's loop."""

from __future__ import annotations

import asyncio
import threading

from streams.shell.app import ConvstreamApp


async def test_flush_hooks_run_on_the_app_loop_when_called_from_the_consumer_thread() -> None:
    app = ConvstreamApp("t-rebalance", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.home_loop = asyncio.get_running_loop()
    ran: list[tuple[str, asyncio.AbstractEventLoop | None]] = []
    done = asyncio.Event()

    def hook() -> None:
        ran.append((threading.current_thread().name, asyncio.get_running_loop()))
        done.set()

    app.flush_hooks.append(hook)

    def consumer_thread() -> None:
        asyncio.run(_rebalance(app))

    thread = threading.Thread(target=consumer_thread, name="consumer-thread")
    thread.start()
    await asyncio.wait_for(done.wait(), 10)
    thread.join(10)
    assert ran == [(threading.current_thread().name, asyncio.get_running_loop())]


async def _rebalance(app: ConvstreamApp) -> None:
    app.on_rebalance_start()


async def test_flush_hooks_run_at_once_on_the_app_loop() -> None:
    app = ConvstreamApp("t-rebalance-2", broker="kafka://127.0.0.1:1", web_enabled=False)
    app.home_loop = asyncio.get_running_loop()
    ran: list[str] = []
    app.flush_hooks.append(lambda: ran.append("flushed"))
    app.on_rebalance_start()
    assert ran == ["flushed"]
