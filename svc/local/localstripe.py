"""localstripe, Stripe's stand-in in local mode, in the tests and in the benchmark: the
launcher, and what it changes in localstripe (Stripe's idempotency among it, and a test aid
that ages an object). Run it alone with
`python -m svc.local.localstripe localstripe --port 8420 --state-file FILE`.
"""

import argparse
import json
import logging
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from svc.local import LocalServiceError, port_is_open
from svc.local.idempotency import Idempotency

logger = logging.getLogger(__name__)


def is_localstripe(base_url: str) -> bool:
    try:
        response = httpx.get(f"{base_url}/js.stripe.com/v3/", timeout=2)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "localstripe" in response.text


def start_localstripe(
    port: int,
    *,
    state_file: Path,
    log_file: Path | None = None,
    fresh: bool = False,
    persist: bool = True,
) -> subprocess.Popen[bytes]:
    """Run localstripe on `port` as a child process, keeping its state in `state_file`
    (or, with `persist=False`, in memory only)."""
    command = [
        sys.executable,
        "-m",
        "svc.local.localstripe",
        "localstripe",
        "--port",
        str(port),
        "--state-file",
        str(state_file),
    ]
    if fresh:
        command.append("--from-scratch")
    if not persist:
        # a load generator's stand-in: in memory only, and no access log
        command += ["--no-persist", "--quiet"]
    state_file.parent.mkdir(parents=True, exist_ok=True)
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL
    process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while not port_is_open("127.0.0.1", port):
        if process.poll() is not None:
            raise LocalServiceError(
                f"localstripe exited with code {process.returncode} before listening on "
                f"port {port}" + (f"; see {log_file}" if log_file else "")
            )
        if time.monotonic() > deadline:
            process.kill()
            raise LocalServiceError(f"localstripe did not listen on port {port} within 20 s")
        time.sleep(0.05)
    return process


def register_localstripe_webhook(
    base_url: str, *, url: str, secret: str, name: str = "qwipsvc"
) -> None:
    """Have localstripe post payment events to `url`, signed like Stripe does."""
    response = httpx.post(
        f"{base_url}/_config/webhooks/{name}",
        data={
            "url": url,
            "secret": secret,
            "events[]": [
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                # A hold's placing and release (the stand-in sends a capture as succeeded).
                "payment_intent.amount_capturable_updated",
                "payment_intent.canceled",
            ],
        },
        timeout=5,
    )
    response.raise_for_status()


def _run_localstripe(
    port: int, state_file: Path, *, from_scratch: bool, persist: bool, quiet: bool
) -> None:
    import uvloop
    from aiohttp import web
    from localstripe import resources, server

    # localstripe keeps its whole state in /tmp/localstripe.pickle, shared by every
    # instance on the machine; give this one its own file so that instances (the
    # service's, the tests') never overwrite each other. It rewrites the whole file on
    # every change, which a load test would mostly measure: hence `persist`.
    def dump_to_disk(store: resources.Store) -> None:
        if not persist:
            return
        with open(state_file, "wb") as f:
            pickle.dump(dict(store), f, protocol=pickle.HIGHEST_PROTOCOL)

    def try_load_from_disk(store: resources.Store) -> None:
        try:
            with open(state_file, "rb") as f:
                saved = pickle.load(f)
        except FileNotFoundError:
            return
        dict.clear(store)
        dict.update(store, saved)
        reindex()

    reindex = _index_by_type(resources)
    _answer_lightly(resources, server)
    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = try_load_from_disk
    # Stripe's idempotency, which localstripe lacks: without it a retry after a crash
    # would charge twice here and not at Stripe (svc/local/idempotency.py).
    keys = Idempotency(state_file.with_name(state_file.name + ".keys") if persist else None)
    keys.install(server.app)
    _add_aging(resources, server.app)
    if not from_scratch:
        resources.store.try_load_from_disk()
        keys.load()

    # What localstripe's own start does, with the access log optional and uvloop.
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("::", port))
    access_log = None
    if not quiet:
        access_log = logging.getLogger("aiohttp.access")
        access_log.setLevel(logging.DEBUG)
        access_log.addHandler(logging.StreamHandler())
    web.run_app(
        server.app, sock=listener, access_log=access_log, print=None, loop=uvloop.new_event_loop()
    )


AGE_PATH = "/_config/qwip/age/{id}"


def _add_aging(resources: Any, app: Any) -> None:
    """A test aid Stripe has no counterpart of: `POST /_config/qwip/age/<id>` with `seconds`
    moves the object's `created` that far back, so that a test can hold an old SetupIntent
    (one past the booking window) without waiting for it to grow old."""
    from aiohttp import web

    async def age(request: web.Request) -> web.Response:
        object_id = request.match_info["id"]
        form = await request.post()
        try:
            seconds = int(str(form.get("seconds", "")))
        except ValueError:
            return web.json_response({"error": {"message": "seconds: an integer"}}, status=400)
        for key, value in dict.items(resources.store):
            if key.split(":", 1)[-1] == object_id:
                value.created -= seconds
                resources.store[key] = value  # saved to the state file like any change
                return web.json_response({"id": object_id, "created": value.created})
        return web.json_response({"error": {"message": f"no object {object_id!r}"}}, status=404)

    app.router.add_post(AGE_PATH, age)


def _index_by_type(resources: Any) -> Callable[[], None]:
    """localstripe lists objects by scanning its whole store, and every charge it shows
    lists its refunds that way: each request costs more than the one before. Keep the keys
    indexed by type so that a list costs what it returns."""
    from localstripe.errors import UserError

    by_type: dict[str, dict[str, Any]] = {}
    store_set, store_del, store_clear = (
        resources.Store.__setitem__,
        resources.Store.__delitem__,
        resources.Store.clear,
    )

    def setitem(store: Any, key: str, value: Any) -> None:
        store_set(store, key, value)
        by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    def delitem(store: Any, key: str) -> None:
        store_del(store, key)
        by_type.get(key.split(":", 1)[0], {}).pop(key, None)

    def clear(store: Any) -> None:
        store_clear(store)
        by_type.clear()

    def list_all(
        cls: Any,
        /,
        url: str,
        limit: int | None = None,
        starting_after: str | None = None,
        **kwargs: Any,
    ) -> Any:
        if kwargs:
            raise UserError(400, "Unexpected " + ", ".join(kwargs.keys()))
        listed = resources.List(url, limit=limit, starting_after=starting_after)
        listed._list = list(by_type.get(cls.object, {}).values())
        return listed

    resources.Store.__setitem__ = setitem
    resources.Store.__delitem__ = delitem
    resources.Store.clear = clear
    resources.StripeObject._api_list_all = classmethod(list_all)

    def reindex() -> None:  # after the store was filled from the state file
        by_type.clear()
        for key, value in dict.items(resources.store):
            by_type.setdefault(key.split(":", 1)[0], {})[key] = value

    return reindex


def _answer_lightly(resources: Any, server: Any) -> None:
    """localstripe indents its JSON, which keeps Python's encoder off its C path, and builds
    an event (a full copy of the object) for every change, stores it and encodes it for
    webhooks before it looks for one that wants it: a third of a payment's CPU. Answer in
    compact JSON (the same values), and build an event only when a webhook listens for it."""
    from aiohttp import web
    from localstripe import webhooks

    def json_response(*args: Any, **kwargs: Any) -> web.Response:
        return web.json_response(*args, dumps=lambda x: json.dumps(x, sort_keys=True), **kwargs)

    def wanted(kind: str) -> bool:
        return any(
            hook.events is None or kind in hook.events for hook in webhooks._webhooks.values()
        )

    def new_event(cls: type, *args: Any, **kwargs: Any) -> Any:
        # `Event(kind, obj)` is None when no webhook wants the kind: never built, never
        # stored. Unpickling calls this without arguments, and gets the instance it needs;
        # the class itself stays as it is, so the state file still pickles it.
        if args and not wanted(args[0]):
            return None
        return object.__new__(cls)

    def schedule_webhook(event: Any) -> None:
        if event is not None:
            webhooks.schedule_webhook(event)

    server.json_response = json_response
    resources.Event.__new__ = staticmethod(new_event)
    # localstripe's resources call `schedule_webhook(Event(kind, obj))` by this name.
    resources.schedule_webhook = schedule_webhook


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m svc.local.localstripe")
    commands = parser.add_subparsers(dest="command", required=True)
    stripe = commands.add_parser("localstripe", help="run localstripe with its own state file")
    stripe.add_argument("--port", type=int, default=8420)
    stripe.add_argument("--state-file", type=Path, required=True)
    stripe.add_argument("--from-scratch", action="store_true")
    stripe.add_argument("--no-persist", action="store_true")
    stripe.add_argument("--quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    if args.command == "localstripe":
        _run_localstripe(
            args.port,
            args.state_file,
            from_scratch=args.from_scratch,
            persist=not args.no_persist,
            quiet=args.quiet,
        )


if __name__ == "__main__":
    main()
