"""`kbqa serve`: run the REST API (kbqa.api) with uvicorn, safely.

While it runs, `kbqa search` and `kbqa ask` with the same settings send their questions to it
(kbqa/warm.py): its models are loaded already.

It binds to 127.0.0.1 by default. Any other address exposes the knowledge bases to the
network, so it is refused unless a bearer token is set (`api.token` in the config, or env
`KBQA_API__TOKEN`); every request must then carry `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from kbqa.errors import ConfigError
from kbqa.ui_launch import is_loopback

log = logging.getLogger(__name__)


def check_exposure(host: str, token: str) -> None:
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"refusing to serve the API on {host!r} without a token: anyone who can reach this machine could read "
            "and change the knowledge bases. Set api.token in the config or the env variable KBQA_API__TOKEN "
            "(clients then send 'Authorization: Bearer <token>'), or use --host 127.0.0.1"
        )


def serve(host: str | None = None, port: int | None = None, config: Path | None = None,
          home: Path | None = None) -> int:
    """Serve until interrupted; returns 0. Settings problems raise `ConfigError` before anything starts.

    `host` and `port` default to `api.host` / `api.port` (127.0.0.1:8000).
    """
    from kbqa.api import create_app, load_server_settings

    settings, api = load_server_settings(config, home)
    host = api.host if host is None else host
    port = api.port if port is None else port
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range (1-65535)")
    check_exposure(host, api.token)
    app = create_app(settings, api, warm_up=True)
    import uvicorn

    from kbqa.warm import remove_record, write_record

    class RecordingServer(uvicorn.Server):
        """Records its address for `kbqa search`/`ask` (kbqa/warm.py) once its socket is bound."""

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started and not self.should_exit:
                try:
                    bound = self.servers[0].sockets[0].getsockname()
                    write_record(settings, str(self.config.host), int(bound[1]))
                except (OSError, IndexError) as exc:
                    log.warning("could not record the server for the CLI to reuse: %s", exc)

    server = RecordingServer(uvicorn.Config(app, host=host, port=port, log_level="info", proxy_headers=False,
                                            server_header=False))
    try:
        server.run()
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped (uvicorn.run swallows it too)
        pass
    finally:
        remove_record(settings)
    return 0
