"""Local servers in a child process, so benchmark clients never share the server's GIL.

The child starts one ``serving.server.LocalServer`` per batching setting on
127.0.0.1 (ephemeral ports), all serving the same SavedModel, and answers
"counts" (batched requests vs. model runs) and "stop" over a pipe.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import tempfile
import traceback
from multiprocessing.connection import Connection
from pathlib import Path

from serving import defaults

START_TIMEOUT_S = 300.0


def _batch_counts(servers: dict) -> dict[bool, dict[str, list[int]]]:
    counts = {}
    for batching, server in servers.items():
        model = server.store.resolve(defaults.MODEL_NAME)
        counts[batching] = {name: list(c) for name, c in model.batch_counts().items()}
    return counts


def _serve(model_dir: str, batching_options: list[bool], conn: Connection) -> None:
    from serving.server import LocalServer

    servers = {}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as empty:
        try:
            for batching in batching_options:
                server = LocalServer(
                    empty,  # no versions there: the fallback model is served as version 1
                    fallback_model=model_dir,
                    enable_batching=batching,
                    poll_seconds=3600.0,
                )
                server.start()
                servers[batching] = server
                server.wait_until_available(START_TIMEOUT_S)
            conn.send(("ports", {b: s.port for b, s in servers.items()}))
            while (command := conn.recv()) != "stop":
                if command == "counts":
                    conn.send(("counts", _batch_counts(servers)))
        except EOFError:  # the benchmark went away: just shut down
            pass
        except Exception:
            conn.send(("error", traceback.format_exc()))
        finally:
            for server in servers.values():
                server.stop(grace=1.0)
            conn.close()


class ServerProcess:
    """``with ServerProcess(model_dir, [False, True]) as servers: servers.wait_ready()[True]``."""

    def __init__(self, model_dir: Path, batching_options: list[bool]) -> None:
        self._model_dir = str(model_dir)
        self._options = batching_options
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self.ports: dict[bool, int] = {}

    def _receive(self, expected: str, timeout: float) -> object:
        assert self._conn is not None
        if not self._conn.poll(timeout):
            raise TimeoutError(f"the server process sent no {expected!r} within {timeout:g} s")
        kind, payload = self._conn.recv()
        if kind == "error":
            raise RuntimeError(f"the server process failed:\n{payload}")
        return payload

    def start(self) -> None:
        """Spawns the child; it loads TensorFlow and the model while the caller works on."""
        context = multiprocessing.get_context("spawn")  # a fresh TensorFlow, no forked threads
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve, args=(self._model_dir, self._options, child), daemon=True
        )
        self._process.start()
        child.close()

    def wait_ready(self) -> dict[bool, int]:
        """Blocks until every server serves; returns {batching: port}."""
        if not self.ports:
            self.ports = self._receive("ports", START_TIMEOUT_S)
        return self.ports

    def batch_counts(self) -> dict[bool, dict[str, list[int]]]:
        """Per batching setting and signature: [requests, model runs] so far."""
        assert self._conn is not None
        self._conn.send("counts")
        return self._receive("counts", 30.0)

    def stop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send("stop")
            self._conn.close()
            self._conn = None
        if self._process is not None:
            self._process.join(30.0)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(5.0)
            self._process = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
