"""A Temporal codec server for NOMAD's encrypted payloads (``nomad-actions codec-server``).

Temporal's Web UI and CLI (``temporal workflow show --codec-endpoint URL``) show encrypted
payloads as ``binary/encrypted``; pointed at this server, they send them to ``POST
URL/decode`` and show the plain JSON. The keys are those of the configuration (the NOMAD API
secret, ``temporal.payload_codec_key`` with its key id), applied by the engine's own codec,
so the server reads exactly what the workers write.

Protocol (Temporal's remote codec): the body of ``/encode`` and ``/decode`` is
``{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`` (protobuf
JSON of ``temporal.api.common.v1.Payloads``), the answer the same shape. ``OPTIONS`` answers
the browser's CORS preflight for the allowed origins.
"""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from nomad_actions import _core
from nomad_actions.config import ConnectionConfig, get_config
from nomad_actions.errors import PayloadError

__all__ = ["CodecServer"]

logger = logging.getLogger(__name__)

#: The largest request body accepted, in bytes (Temporal's own payload limit is 2 MiB).
MAX_BODY = 16 * 1024 * 1024


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("codec server: " + format, *args)

    def _cors(self) -> None:
        origin = self.headers.get("Origin")
        allowed = self.server.cors_origins
        if origin and ("*" in allowed or origin in allowed):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Vary", "Origin")

    def _reply(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self._cors()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_OPTIONS(self) -> None:
        self.send_response(200)
        self._cors()
        self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")
        self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        action = self.path.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        if action not in ("encode", "decode"):
            self._reply(404, {"message": f"unknown path {self.path!r}; use /encode or /decode"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self._reply(400, {"message": f"Content-Length must be 0 to {MAX_BODY} bytes"})
            return
        try:
            request = json_format.Parse(self.rfile.read(length) or b"{}", Payloads())
        except json_format.ParseError as err:
            self._reply(400, {"message": f"body is not a Payloads JSON object: {err}"})
            return
        raw = [p.SerializeToString() for p in request.payloads]
        codec = self.server.codec
        try:
            out = codec.encode(raw) if action == "encode" else codec.decode(raw)
        except PayloadError as err:
            self._reply(400, {"message": str(err)})
            return
        answer = Payloads()
        for item in out:
            answer.payloads.add().ParseFromString(item)
        self._reply(200, json_format.MessageToDict(answer))


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], codec: Any, cors_origins: Sequence[str]) -> None:
        super().__init__(address, _Handler)
        self.codec = codec
        self.cors_origins = frozenset(cors_origins)


class CodecServer:
    """Serves ``/encode`` and ``/decode`` with the payload codec of a configuration.

    Args:
        config: Whose keys to use; default :func:`nomad_actions.get_config`.
        host: Address to listen on (loopback by default: the Web UI runs in the operator's
            browser, which reaches it locally or through a proxy).
        port: Port; 0 picks a free one (see :attr:`url`).
        cors_origins: Origins (e.g. the Web UI's ``http://localhost:8233``) allowed to call
            it from a browser; ``"*"`` allows any.

    Raises:
        ValueError: The configuration encrypts nothing (no API secret outside development
            mode, no payload codec key): there would be nothing to decode.
        OSError: The port cannot be bound.
    """

    def __init__(
        self,
        config: ConnectionConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        cors_origins: Sequence[str] = ("*",),
    ) -> None:
        codec = _core.PayloadCodecRef(config or get_config())
        if not codec.enabled:
            raise ValueError(
                "the codec server needs a key: set the NOMAD API secret "
                "(NOMAD_SERVICES_API_SECRET, outside development mode) or "
                "NOMAD_TEMPORAL_PAYLOAD_CODEC_KEY"
            )
        self._server = _HTTPServer((host, port), codec, cors_origins)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The codec endpoint, e.g. ``http://127.0.0.1:8081``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve in this thread until :meth:`stop` (from another thread)."""
        self._server.serve_forever(poll_interval=0.2)

    def start(self) -> CodecServer:
        """Serve in a background thread; returns self."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="nomad-actions-codec-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (when :meth:`start` was called) and close the socket."""
        if self._thread is not None:
            self._server.shutdown()  # waits for the serving loop: only when one runs
            self._thread.join(5)
        self._server.server_close()

    def __enter__(self) -> CodecServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
