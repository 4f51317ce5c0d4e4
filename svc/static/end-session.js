// The end-session page: the running cost while the session is open, the End button with its
// confirm step, then the receipt. An already-ended session arrives with its receipt rendered.
import {
  api,
  elapsedSeconds,
  formatDuration,
  formatLocalTime,
  formatMoney,
  Problem,
} from "./common.js";

const byId = (id) => document.getElementById(id);
const data = byId("main").dataset;
const { sessionId, timezone, startTime } = data;
const refreshMs = Number(data.refreshSeconds) * 1000;
const status = byId("end-status");

function say(message, { error = false } = {}) {
  status.textContent = message;
  status.classList.toggle("is-error", error);
}

// The receipt's words for a payment outcome, from the <template> the server rendered for it
// (svc/templates/_payment.html, the one place they are written), with the figures filled in.
function showOutcome(element, paymentStatus, costPence, currency, error) {
  const template = byId(`outcome-${paymentStatus}`) ?? byId("outcome-pending");
  const words = template.content.cloneNode(true);
  words.querySelectorAll('[data-slot="amount"]').forEach((slot) => {
    slot.textContent = formatMoney(costPence, currency);
  });
  // Stripe's words for the customer, without its code ("card_declined: ..."), as the server
  // puts them (svc/pages.py:failure_reason); without any, the template's own stay.
  const text = error || "";
  const reason = (text.includes(": ") ? text.slice(text.indexOf(": ") + 2) : text).replace(
    /\.+$/,
    "",
  );
  if (reason) {
    words.querySelectorAll('[data-slot="reason"]').forEach((slot) => {
      slot.textContent = reason;
    });
  }
  element.replaceChildren(words);
  element.className = `outcome outcome--${template.dataset.tone}`;
}

// What became of the hold on the card, from the <template> for its case (the same choice as
// svc/pages.py:HoldOutcome.case); a session without a hold has no such line.
function holdCase(captured, released) {
  if (captured == null || released == null) return "pending";
  if (captured === 0) return "none";
  if (released === 0) return "all";
  return "part";
}

function showHold(ended) {
  const element = byId("receipt-hold");
  if (!element || !ended.hold_pence) return;
  const template = byId(`held-${holdCase(ended.captured_pence, ended.released_pence)}`);
  const words = template.content.cloneNode(true);
  const figures = {
    held: ended.hold_pence,
    captured: ended.captured_pence,
    released: ended.released_pence,
  };
  for (const [name, pence] of Object.entries(figures)) {
    words.querySelectorAll(`[data-slot="${name}"]`).forEach((slot) => {
      slot.textContent = pence == null ? "" : formatMoney(pence, ended.currency);
    });
  }
  element.replaceChildren(words);
}

const timers = [];
function every(ms, task) {
  timers.push(setInterval(task, ms));
}
function stopTimers() {
  timers.splice(0).forEach(clearInterval);
}

// Once ended, a charge still in progress settles within moments (or in the background round);
// the server then renders the final receipt.
function waitForSettlement() {
  every(refreshMs, async () => {
    try {
      const preview = await api(`/api/end-session-preview?sessionId=${sessionId}`);
      if (preview.payment_status && preview.payment_status !== "pending") location.reload();
    } catch {
      // Try again at the next round.
    }
  });
}

function showReceipt(ended) {
  byId("receipt-amount").textContent = formatMoney(ended.final_cost_pence, ended.currency);
  showOutcome(
    byId("receipt-outcome"),
    ended.payment_status,
    ended.final_cost_pence,
    ended.currency,
    ended.error,
  );
  showHold(ended);
  byId("receipt-pay").hidden = !["failed", "requires_action"].includes(ended.payment_status);
  byId("receipt-end").textContent = formatLocalTime(ended.end_time, timezone);
  byId("receipt-duration").textContent = formatDuration(elapsedSeconds(startTime, ended.end_time));
  byId("live").toggleAttribute("inert", true);
  byId("receipt").toggleAttribute("inert", false);
  byId("receipt-title").focus();
  if (ended.payment_status === "pending") waitForSettlement();
}

function followOpenSession() {
  // The clock ticks here every second from the server's figure; the cost always comes from
  // the server, which computes the preview and the final charge with one function.
  let elapsedBase = Number(data.elapsedSeconds);
  let elapsedAt = performance.now();
  const tick = () => {
    const seconds = elapsedBase + Math.floor((performance.now() - elapsedAt) / 1000);
    byId("live-elapsed").textContent = formatDuration(seconds);
  };
  let ending = false;

  const refresh = async () => {
    if (ending || document.visibilityState !== "visible") return;
    let preview;
    try {
      preview = await api(`/api/end-session-preview?sessionId=${sessionId}`);
    } catch {
      return; // the figures stay as they are until the next round
    }
    if (ending) return;
    if (preview.is_complete) {
      // Ended elsewhere (another tab, or the time limit): show the server's receipt.
      location.reload();
      return;
    }
    byId("live-cost").textContent = formatMoney(preview.cost_pence, preview.currency);
    elapsedBase = preview.elapsed_seconds;
    elapsedAt = performance.now();
    tick();
  };

  every(1000, tick);
  every(refreshMs, refresh);
  document.addEventListener("visibilitychange", refresh);

  const start = byId("end-start");
  const confirm = byId("end-confirm");
  const endButton = byId("end-button");
  const yes = byId("confirm-yes");
  const no = byId("confirm-no");

  const asking = (on) => {
    // As attributes: the stylesheet hides the inert one, in browsers without inert too.
    start.toggleAttribute("inert", on);
    confirm.toggleAttribute("inert", !on);
    (on ? yes : endButton).focus();
  };
  endButton.addEventListener("click", () => {
    say("");
    asking(true);
  });
  no.addEventListener("click", () => asking(false));

  yes.addEventListener("click", async () => {
    if (ending) return;
    ending = true;
    yes.disabled = no.disabled = true;
    yes.setAttribute("aria-busy", "true");
    say("Ending your session and charging your card…");
    try {
      const ended = await api("/api/end-session", { method: "POST", body: { sessionId } });
      stopTimers();
      say("");
      showReceipt(ended);
    } catch (error) {
      const problem =
        error instanceof Problem ? error : new Problem("Something went wrong. Please try again.");
      // Ending is safe to repeat: the server never charges a session twice.
      ending = false;
      yes.disabled = no.disabled = false;
      yes.setAttribute("aria-busy", "false");
      say(problem.message, { error: true });
    }
  });
}

if (data.state === "open") {
  followOpenSession();
} else if (!data.paymentStatus || data.paymentStatus === "pending") {
  waitForSettlement();
}
