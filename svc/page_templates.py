"""The HTML of the built-in pages: records in, markup out, no I/O.

Every value that comes from the database, the settings or the request goes through
`_e` (escaped, quotes included), so that an address can never become markup. The pages'
scripts read what they need from `data-` attributes on `<main>`; no script is inline.
"""

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

from svc.env import Settings
from svc.records import Pod, SessionRecord
from svc.schemas import SessionPreview
from svc.types import PaymentStatus
from svc.utils import format_duration, format_local_time, format_money, format_price_per_minute

# How often a page refreshes what it shows while it is open (seconds); the scripts read these.
POD_LIST_REFRESH_SECONDS = 3
SESSION_REFRESH_SECONDS = 2

STRIPE_TEST_CARD = "4242 4242 4242 4242"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _attributes(values: dict[str, object]) -> str:
    return "".join(f' {name}="{_e(value)}"' for name, value in values.items())


def layout(
    *,
    title: str,
    content: str,
    page: str,
    data: dict[str, object] | None = None,
    scripts: Sequence[str] = (),
    classic_scripts: Sequence[str] = (),
) -> str:
    """A whole document. `classic_scripts` load before the page's own module scripts."""
    tags = [f'<script defer src="{_e(src)}"></script>' for src in classic_scripts]
    tags += [f'<script type="module" src="{_e(src)}"></script>' for src in scripts]
    main_attributes = _attributes({"data-page": page, **(data or {})})
    return f"""<!doctype html>
<html lang="en-GB">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)} · Qwip</title>
<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/static/qwip.css">
{"".join(tags)}
</head>
<body>
<header class="site-header">
  <a class="brand" href="/">Qwip</a><span class="tagline">quiet pods by the minute</span>
</header>
<main id="main"{main_attributes}>
{content}
</main>
</body>
</html>
"""


def _facts(rows: Iterable[tuple[str, str, str]]) -> str:
    """A definition list of (label, element id, value) rows."""
    items = "".join(
        f'<div class="fact"><dt>{_e(label)}</dt><dd{_attributes({"id": ident}) if ident else ""}>'
        f"{_e(value)}</dd></div>"
        for label, ident, value in rows
    )
    return f'<dl class="facts">{items}</dl>'


# The pod list


def _pod_state(pod: Pod) -> str:
    state, label = ("in-use", "In use") if pod.in_use else ("free", "Free")
    return f'<span class="state state--{state}" data-pod-state>{label}</span>'


def pod_list(pods: Sequence[Pod]) -> str:
    if pods:
        items = "".join(
            f'<li><a class="pod" href="/book?podName={_e(pod.name)}" data-pod-id="{pod.id}">'
            f'<span class="pod__name">{_e(pod.name)}</span>{_pod_state(pod)}'
            f'<span class="pod__address">{_e(pod.address)}</span>'
            f'<span class="pod__price">{_e(format_price_per_minute(pod.price, pod.currency))}'
            "</span></a></li>"
            for pod in pods
        )
        listing = f'<ul class="pods" aria-label="Pods">{items}</ul>'
    else:
        listing = (
            '<p class="panel">No pods yet. An operator adds them with '
            "<code>python -m svc pods add</code>.</p>"
        )
    content = f"""<h1>Book a quiet pod</h1>
<p class="lede">Save a card, get the door code, and pay only for the minutes you stay.</p>
{listing}"""
    return layout(
        title="Pods",
        content=content,
        page="pods",
        data={"data-refresh-seconds": POD_LIST_REFRESH_SECONDS},
        scripts=["/static/pods.js"],
    )


# Booking


def booking(
    pod: Pod, *, settings: Settings, stripe_script: str, publishable_key: str, test_mode: bool
) -> str:
    price = format_price_per_minute(pod.price, pod.currency)
    notices = []
    if pod.in_use:
        notices.append(
            '<p class="notice">This pod is in use right now. You can book it as soon as '
            "the current session ends.</p>"
        )
    if test_mode:
        notices.append(
            '<p class="notice notice--quiet">Test mode: cards go to a local Stripe emulator. '
            f"Use {STRIPE_TEST_CARD}, any future date and any CVC.</p>"
        )
    content = f"""<p class="back"><a href="/">All pods</a></p>
<h1>{_e(pod.name)}</h1>
<p class="pod-address">{_e(pod.address)}</p>
<p class="pod-price">{_e(price)}</p>
{"".join(notices)}
<div class="swap">
<form id="booking-form" class="panel" novalidate>
  <div class="field">
    <label for="email">E-mail</label>
    <input id="email" name="email" type="email" autocomplete="email" inputmode="email"
      required maxlength="254" aria-describedby="email-hint">
    <p class="hint" id="email-hint">Your door code is sent here.</p>
  </div>
  <div class="field">
    <span class="label" id="card-label">Card</span>
    <div id="card-element" class="card-field" role="group" aria-labelledby="card-label"></div>
  </div>
  <p class="consent" id="consent">By booking, you allow Qwip to save this card and charge it
    when your session ends, without you being present, for the minutes you use
    {_e(pod.name)} at {_e(price)}.</p>
  <button type="submit" class="button" aria-describedby="consent">Save card and book</button>
  <p id="booking-status" class="status" aria-live="polite"></p>
</form>
<section id="booking-result" class="panel result" aria-labelledby="result-title" inert>
  <h2 id="result-title" tabindex="-1">You're booked</h2>
  <p class="label">Door code</p>
  <p class="code" id="result-code"></p>
  {_facts([("Pod", "result-pod", pod.name), ("Started", "result-start", "")])}
  <p>We have e-mailed you the code and a link to this session. When you leave, end
    your session so that you pay only for the minutes you used.</p>
  <a id="result-link" class="button" href="/">See the cost and end the session</a>
</section>
</div>"""
    return layout(
        title=f"Book {pod.name}",
        content=content,
        page="book",
        data={
            "data-pod-name": pod.name,
            "data-publishable-key": publishable_key,
            "data-timezone": settings.TIMEZONE,
        },
        classic_scripts=[stripe_script],
        scripts=["/static/book.js"],
    )


# The end-session page


def _when(moment: datetime | None, settings: Settings) -> str:
    return format_local_time(moment, settings.timezone) if moment else ""


def payment_outcome(
    status: PaymentStatus | None,
    *,
    cost_pence: int,
    currency: str,
    error: str | None,
    minimum_pence: int,
) -> tuple[str, str]:
    """The sentence saying what happened to the payment, and its tone (ok, warn, wait).

    static/end-session.js words the answer of POST /api/end-session the same way.
    """
    amount = format_money(cost_pence, currency)
    if status is PaymentStatus.SUCCEEDED:
        return "ok", f"Paid: {amount} was charged to your saved card."
    if status is PaymentStatus.NOT_CHARGED:
        minimum = format_money(minimum_pence, currency)
        return "ok", f"Nothing to pay: {amount} is below our minimum charge of {minimum}."
    if status is PaymentStatus.FAILED:
        reason = (error or "").split(": ", 1)[-1].rstrip(".") or "Your card was declined"
        return (
            "warn",
            f"The charge of {amount} did not go through. {reason}. "
            "We have e-mailed you about paying it.",
        )
    if status is PaymentStatus.REQUIRES_ACTION:
        return (
            "warn",
            f"Your bank wants you to approve the charge of {amount}. "
            "We have e-mailed you about paying it.",
        )
    return "wait", f"Charging {amount} to your saved card. This page updates when it is done."


def end_session(session: SessionRecord, preview: SessionPreview, *, settings: Settings) -> str:
    ended = session.end_time is not None
    cost = format_money(preview.cost_pence, preview.currency)
    tone, outcome = payment_outcome(
        session.payment_status,
        cost_pence=preview.cost_pence,
        currency=preview.currency,
        error=session.payment_error,
        minimum_pence=settings.MINIMUM_CHARGE_PENCE,
    )
    # Both panels are always there, one of them inert: the page keeps its size when it swaps.
    live_inert, receipt_inert = (" inert", "") if ended else ("", " inert")
    receipt_amount, receipt_outcome = (cost, outcome) if ended else ("", "")
    price = format_price_per_minute(session.price_per_minute, session.currency)
    live_facts = _facts(
        [
            ("Started", "", _when(session.start_time, settings)),
            ("Time so far", "live-elapsed", format_duration(preview.elapsed_seconds)),
            ("Price", "", price),
        ]
    )
    receipt_facts = _facts(
        [
            ("Started", "", _when(session.start_time, settings)),
            ("Ended", "receipt-end", _when(session.end_time, settings)),
            ("Duration", "receipt-duration", format_duration(preview.elapsed_seconds)),
        ]
    )
    content = f"""<p class="back"><a href="/">All pods</a></p>
<h1>{_e(session.pod_name)}</h1>
<p class="pod-address">{_e(session.pod_address)}</p>
<div class="swap">
<section id="live" class="panel" aria-labelledby="live-title"{live_inert}>
  <h2 id="live-title" class="label">Cost so far</h2>
  <p class="amount" id="live-cost" aria-live="off">{_e(cost)}</p>
  {live_facts}
  <div class="swap">
    <div id="end-start">
      <button type="button" class="button" id="end-button">End session</button>
      <p class="hint">Ending stops the clock and turns off the door code. Your card is charged
        for the time so far, and the receipt is e-mailed to you.</p>
    </div>
    <div id="end-confirm" class="confirm" role="group" aria-labelledby="confirm-text" inert>
      <p id="confirm-text">End your session now? Your card is charged for the time so far.</p>
      <div class="actions">
        <button type="button" class="button" id="confirm-yes">Yes, end and pay</button>
        <button type="button" class="button button--quiet" id="confirm-no">Keep my session</button>
      </div>
    </div>
  </div>
  <p id="end-status" class="status" aria-live="polite"></p>
</section>
<section id="receipt" class="panel result" aria-labelledby="receipt-title"{receipt_inert}>
  <h2 id="receipt-title" tabindex="-1">Session ended</h2>
  <p class="amount" id="receipt-amount">{_e(receipt_amount)}</p>
  <p class="outcome outcome--{tone}" id="receipt-outcome">{_e(receipt_outcome)}</p>
  {receipt_facts}
  <p class="back"><a href="/">See all pods</a></p>
</section>
</div>"""
    return layout(
        title=f"Your session in {session.pod_name}",
        content=content,
        page="end-session",
        data={
            "data-session-id": session.id,
            "data-state": "ended" if ended else "open",
            "data-payment-status": session.payment_status or "",
            "data-start-time": session.start_time.isoformat(),
            "data-elapsed-seconds": preview.elapsed_seconds,
            "data-timezone": settings.TIMEZONE,
            "data-minimum-charge-pence": settings.MINIMUM_CHARGE_PENCE,
            "data-refresh-seconds": SESSION_REFRESH_SECONDS,
        },
        scripts=["/static/end-session.js"],
    )


# Not found


def _not_found(title: str, message: str) -> str:
    content = f"""<div class="panel">
<h1>{_e(title)}</h1>
<p>{_e(message)}</p>
<a class="button" href="/">See all pods</a>
</div>"""
    return layout(title=title, content=content, page="not-found")


def pod_not_found(name: str | None) -> str:
    if not name:
        return _not_found("Choose a pod", "This link does not name a pod. Pick one from the list.")
    return _not_found(
        "Pod not found", f"There is no pod called “{name}”. Pick one from the list of pods."
    )


def session_not_found() -> str:
    return _not_found(
        "Session not found",
        "We cannot find a session for this link. Open the link in your booking e-mail "
        "again; if it still does not work, the link may be incomplete.",
    )
