"""Driving the pages in chromium: tabs that record what went wrong, screenshots, the card."""

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from playwright.async_api import Page, ViewportSize

from tests.support.processes import ROOT

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = ViewportSize(width=375, height=812)
DESKTOP = ViewportSize(width=1280, height=800)
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

# Chromium reports every HTTP error status in the console. The tests expect some (a declined
# card is a 402 from Stripe, a pod in use a 409) and assert the words on the page instead.
_HTTP_STATUS_NOTE = "Failed to load resource: the server responded with a status of"


@dataclass
class Tab:
    """A page in a browser context of its own, with the script errors and CSP violations it saw
    and every request it made."""

    page: Page
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def calls_to(self, path: str) -> int:
        return sum(1 for url in self.requests if httpx.URL(url).path == path)

    def on_console(self, kind: str, text: str) -> None:
        if kind == "error" and not text.startswith(_HTTP_STATUS_NOTE):
            self.problems.append(f"console: {text}")


OpenTab = Callable[[], Awaitable[Tab]]


async def snapshot(page: Page, name: str) -> None:
    """The page as a phone and as a laptop show it, for a human to look at."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for viewport in (PHONE, DESKTOP):
        await page.set_viewport_size(viewport)
        path = SCREENSHOTS / f"{name}-{viewport['width']}x{viewport['height']}.png"
        await page.screenshot(path=path, full_page=True)
    await page.set_viewport_size(PHONE)


async def fill_card(page: Page, number: str) -> None:
    """Type a card into the card element (in local mode, localstripe's five plain inputs)."""
    card = page.locator("#card-element")
    await card.get_by_placeholder("number", exact=True).fill(number)
    await card.get_by_placeholder("exp_month").fill("12")
    await card.get_by_placeholder("exp_year").fill("34")  # two digits: the script adds "20"
    await card.get_by_placeholder("cvc").fill("123")
    await card.get_by_placeholder("postal_code").fill("N1 9GU")
