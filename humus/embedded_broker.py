"""An in-process MQTT broker (amqtt) so `humus demo` needs no server.

Limits measured on this project (DESIGN.md): amqtt speaks MQTT 3.1.1 only,
does not serve `$share/...` subscriptions and carries a few hundred QoS 1
messages a second. It is for the demo; production runs Mosquitto or a
clustered broker.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading


class EmbeddedBroker:
    """amqtt on 127.0.0.1:`port` (0 picks a free port), in a thread of its own."""

    def __init__(self, port: int = 0) -> None:
        if port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
        self.host, self.port = "127.0.0.1", port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._broker = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        # amqtt logs every connection at INFO; the demo's own log is what a user reads.
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.ERROR)
        self._thread = threading.Thread(target=self._run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout):
            raise RuntimeError(f"embedded MQTT broker did not start on port {self.port} within {timeout} s")
        if self._error:
            raise RuntimeError(f"embedded MQTT broker failed to start on port {self.port}: {self._error}")
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 100}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def main() -> None:
            self._broker = Broker(config, loop=loop)
            await self._broker.start()

        try:
            loop.run_until_complete(main())
        except BaseException as e:  # noqa: BLE001 - reported to the starting thread
            self._error = e
            self._started.set()
            return
        self._started.set()
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop, broker = self._loop, self._broker
        if loop is None or broker is None or not loop.is_running():
            return
        fut = asyncio.run_coroutine_threadsafe(broker.shutdown(), loop)
        try:
            fut.result(timeout=10)
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=10)

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
