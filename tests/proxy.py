"""A TCP proxy on loopback between a browser and the app, whose connection can go dead
as Wi-Fi does: silent first (nothing forwarded, nothing closed: the page still thinks it
is connected), then found dead (every connection closed; new ones go through)."""

from __future__ import annotations

import socket
import threading


class DeadWifi:
    def __init__(self, port: int) -> None:
        self._target = ("127.0.0.1", port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._up, self._down = threading.Event(), threading.Event()  # set: flowing
        self.held: list[bytes] = []  # what came while silent, from either side
        self._up.set()
        self._down.set()
        threading.Thread(target=self._accept, daemon=True).start()

    def silence(self, up: bool = True, down: bool = True) -> None:
        """Forward nothing more (``up``: from the browser, ``down``: to it); what comes
        meanwhile is held, and lost if the connection is cut."""
        if up:
            self._up.clear()
        if down:
            self._down.clear()

    def cut(self) -> None:
        """Close every connection, dropping what was held; new ones flow again."""
        with self._lock:
            held, self._open = self._open, []
        for sock in held:
            _close(sock)
        self._up.set()
        self._down.set()

    def close(self) -> None:
        _close(self._listener)
        self.cut()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._target)
            except OSError:
                if self._listener.fileno() < 0:
                    return
                continue
            with self._lock:
                self._open += [client, server]
            for source, sink, flowing in ((client, server, self._up),
                                          (server, client, self._down)):
                threading.Thread(target=self._pump, args=(source, sink, flowing),
                                 daemon=True).start()

    def _pump(self, source, sink, flowing: threading.Event) -> None:
        try:
            while data := source.recv(65536):
                if not flowing.is_set():
                    self.held.append(data)
                flowing.wait()  # silent: held here
                with self._lock:
                    if sink not in self._open:
                        break  # cut meanwhile: what was held is lost
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
