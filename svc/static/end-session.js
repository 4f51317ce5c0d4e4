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
const minimumPence = Number(data.minimumChargePence);
const status = byId("end-status");

function say(message, { error = false } = {}) {
  status.textContent = message;
  status.classList.toggle("is-error", error);
}

// Worded as svc/page_templates.py:payment_outcome words the server-rendered receipt.
function paymentOutcome(paymentStatus, costPence, currency, error) {
  const amount = formatMoney(costPence, currency);
  switch (paymentStatus) {
    case "succeeded":
      return ["ok", `Paid: ${amount} was charged to your saved card.`];
    case "not_charged": {
      const minimum = formatMoney(minimumPence, currency);
      return ["ok", `Nothing to pay: ${amount} is below our minimum charge of ${minimum}.`];
    }
    case "failed": {
      const text = error || "";
      const reason = (text.includes(": ") ? text.slice(text.indexOf(": ") + 2) : text)
        .replace(/\.+$/, "");
      return [
        "warn",
        `The charge of ${amount} did not go through. ${reason || "Your card was declined"}. ` +
          "We have e-mailed you about paying it.",
      ];
    }
    case "requires_action":
      return [
        "warn",
        `Your bank wants you to approve the charge of ${amount}. We have e-mailed you about paying it.`,
      ];
    default:
      return ["wait", `Charging ${amount} to your saved card. This page updates when it is done.`];
  }
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
  const [tone, text] = paymentOutcome(
    ended.payment_status,
    ended.final_cost_pence,
    ended.currency,
    ended.error,
  );
  const outcome = byId("receipt-outcome");
  outcome.textContent = text;
  outcome.className = `outcome outcome--${tone}`;
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
