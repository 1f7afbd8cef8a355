"""`kbqa ui`: start the Streamlit app (app.py) as a subprocess, safely.

It binds to 127.0.0.1 by default. Any other address exposes the knowledge base to the
network, so it is refused unless a password is set (`ui.password` in the config, or env
`KBQA_UI__PASSWORD`); the app then asks every browser session for it.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path

from kbqa.config import load_settings
from kbqa.errors import ConfigError

APP_FILE = "app.py"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; False for 0.0.0.0, '' and everything else."""
    if host.strip().lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def find_app() -> Path:
    """app.py beside the kbqa package (a source checkout or editable install), else in the current folder."""
    candidates = [Path(__file__).resolve().parent.parent / APP_FILE, Path.cwd() / APP_FILE]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"cannot find the Streamlit app ({APP_FILE}); looked in {', '.join(str(c.parent) for c in candidates)}. "
        "Run `kbqa ui` from the kbqa source folder or install it with `pip install -e .`"
    )


def streamlit_command(app: Path, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(app),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
        "--client.toolbarMode", "viewer",
    ]


def launch(host: str | None = None, port: int | None = None, config: Path | None = None,
           home: Path | None = None) -> int:
    """Run the app until it stops; returns streamlit's exit code.

    `host` and `port` default to `ui.host` / `ui.port` from the settings. Raises `ConfigError`
    when the host is not a loopback address and no password is set, when the port is out of
    range, or when the settings are invalid (all checked before starting).
    """
    settings = load_settings(config, home=home) if home else load_settings(config)
    host = settings.ui.host if host is None else host
    port = settings.ui.port if port is None else port
    if not 1 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range (1-65535)")
    if not is_loopback(host) and not settings.ui.password:
        raise ConfigError(
            f"refusing to serve on {host!r} without a password: anyone who can reach this machine could read the "
            "knowledge base. Set ui.password in the config or the env variable KBQA_UI__PASSWORD, or use "
            "--host 127.0.0.1"
        )
    env = dict(os.environ)
    if config is not None:
        env["KBQA_CONFIG"] = str(Path(config).resolve())
    if home is not None:
        env["KBQA_HOME"] = str(Path(home).resolve())
    try:
        return subprocess.call(streamlit_command(find_app(), host, port), env=env)
    except KeyboardInterrupt:
        return 130
