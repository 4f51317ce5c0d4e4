// Shared by the pages' scripts: calling the JSON API with every failure put into words, and
// formatting money, times and durations exactly as the server does (svc/utils.py), so that
// what a script writes matches what the server rendered.

export class Problem extends Error {
  constructor(message, { status = 0, retryable = false, body = null } = {}) {
    super(message);
    this.status = status;
    // Nothing was decided by the server (network failure, 5xx): the same call may be repeated.
    this.retryable = retryable;
    // The server's whole answer, for the fields beside `detail` (a 402's requires_action).
    this.body = body;
  }
}

// Above the server's own wait for a charge in progress (25 s), so it answers first.
const TIMEOUT_MS = 40000;

export async function api(path, { method = "GET", body } = {}) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), TIMEOUT_MS);
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: controller.signal,
      cache: "no-store",
    });
  } catch (error) {
    const message =
      error.name === "AbortError"
        ? "Qwip took too long to answer. Check your connection and try again."
        : "Qwip cannot be reached. Check your connection and try again.";
    throw new Problem(message, { retryable: true });
  } finally {
    clearTimeout(timer);
  }
  const data = await response.json().catch(() => null);
  if (response.ok && data !== null) return data;
  const detail = data && typeof data.detail === "string" ? data.detail : "";
  throw new Problem(detail || `Something went wrong (error ${response.status}). Please try again.`, {
    status: response.status,
    retryable: response.status >= 500,
    body: data,
  });
}

const SYMBOLS = { gbp: "£", eur: "€", usd: "$" };

// £2.63 for 263 pence; integer arithmetic, so no float rounding.
export function formatMoney(pence, currency) {
  const whole = Math.trunc(pence / 100);
  const amount = `${whole}.${String(pence % 100).padStart(2, "0")}`;
  const symbol = SYMBOLS[currency.toLowerCase()];
  return symbol ? `${symbol}${amount}` : `${amount} ${currency.toUpperCase()}`;
}

// 26 November 2026, 3:05pm, in the pods' time zone.
export function formatLocalTime(iso, timeZone) {
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone,
    day: "numeric",
    month: "long",
    year: "numeric",
    hour: "numeric",
    minute: "2-digit",
    hourCycle: "h12",
  });
  const parts = {};
  for (const part of format.formatToParts(new Date(iso))) parts[part.type] = part.value;
  const period = (parts.dayPeriod || "").toLowerCase().replace(/\W/g, "");
  return `${parts.day} ${parts.month} ${parts.year}, ${parts.hour}:${parts.minute}${period}`;
}

// 1 h 05 min 03 s, 12 min 00 s, 45 s.
export function formatDuration(seconds) {
  const two = (n) => String(n).padStart(2, "0");
  const hours = Math.floor(seconds / 3600);
  const minutes = Math.floor((seconds % 3600) / 60);
  const secs = seconds % 60;
  if (hours) return `${hours} h ${two(minutes)} min ${two(secs)} s`;
  if (minutes) return `${minutes} min ${two(secs)} s`;
  return `${secs} s`;
}

// Whole seconds from one ISO time to another, to the microsecond like the server (Date.parse
// alone keeps milliseconds only, which can differ by a second).
export function elapsedSeconds(startIso, endIso) {
  const micros = (iso) => {
    const [, base, fraction = "", zone] = iso.match(/^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(.*)$/);
    return Date.parse(base + zone) * 1000 + Number((fraction + "000000").slice(0, 6));
  };
  return Math.max(0, Math.floor((micros(endIso) - micros(startIso)) / 1e6));
}

// A status line that says a message, in red when it is an error.
export function statusLine(element) {
  return (message, { error = false } = {}) => {
    element.textContent = message;
    element.classList.toggle("is-error", error);
  };
}

export const CARD_UNAVAILABLE =
  "Card payments could not load. Check your connection and reload the page.";

// Stripe.js and its card field, mounted on `selector`; null when Stripe.js did not load.
export function mountCard(publishableKey, selector) {
  try {
    const stripe = Stripe(publishableKey);
    const card = stripe.elements().create("card", {
      style: { base: { fontSize: "16px", color: "#1f2a2e" } },
    });
    card.mount(selector);
    return { stripe, card };
  } catch {
    return null;
  }
}
