// The pay page: pay what an ended session owes, with the saved card (the bank may ask the
// customer to confirm) or another card saved here, with Stripe.js; the service reads every
// outcome from Stripe itself.
import { api, CARD_UNAVAILABLE, mountCard, Problem, statusLine } from "./common.js";

const byId = (id) => document.getElementById(id);
const { sessionId, publishableKey } = byId("main").dataset;
const status = byId("pay-status");
const savedButton = byId("pay-saved");
const form = byId("new-card-form");
const newButton = byId("pay-new");

const say = statusLine(status);

const { stripe = null, card = null } = mountCard(publishableKey, "#card-element") || {};
if (!stripe) say(CARD_UNAVAILABLE, { error: true });

const NOT_TAKEN = "Nothing was taken from your card.";
const UNREACHABLE = "We could not reach the card service. Check your connection and try again.";

// Stripe.js answers with its own errors, meant for the cardholder.
function cardProblem(error, fallback) {
  if (!error || error instanceof Error) return new Problem(UNREACHABLE, { retryable: true });
  return new Problem(`${error.message || fallback} ${NOT_TAKEN}`);
}

function showPaid() {
  byId("pay-form").toggleAttribute("inert", true);
  byId("pay-result").toggleAttribute("inert", false);
  byId("paid-title").focus();
}

// One payment: the service charges the card with the customer here; when the bank asks,
// Stripe.js shows its window, then the service reads the payment again from Stripe.
async function pay(extra) {
  let result = await api("/api/pay-session", { method: "POST", body: { sessionId, ...extra } });
  if (result.status === "requires_action") {
    say("Your bank asks you to confirm this payment…");
    const outcome = await stripe.confirmCardPayment(result.client_secret);
    if (outcome.error) {
      throw cardProblem(outcome.error, "Your bank did not approve the payment.");
    }
    say("Checking the payment…");
    result = await api("/api/pay-session", {
      method: "POST",
      body: { sessionId, paymentIntentId: result.payment_intent_id },
    });
  }
  if (result.status === "succeeded") {
    say("");
    showPaid();
    return;
  }
  if (result.status === "processing") {
    throw new Problem("Your payment is being processed. Reload this page in a minute.");
  }
  throw new Problem(`${result.error || "The payment did not go through."} Try again or use another card.`);
}

let busy = false;
function setBusy(on) {
  busy = on;
  for (const button of [savedButton, newButton]) {
    if (!button) continue;
    button.disabled = on;
    button.setAttribute("aria-busy", String(on));
  }
}

async function run(task) {
  if (busy || !stripe) return;
  setBusy(true);
  try {
    await task();
  } catch (error) {
    const problem =
      error instanceof Problem ? error : new Problem("Something went wrong. Please try again.");
    say(problem.message, { error: true });
  } finally {
    setBusy(false);
  }
}

if (savedButton) {
  savedButton.addEventListener("click", () =>
    run(async () => {
      say("Paying with your saved card…");
      await pay({});
    }),
  );
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  run(async () => {
    say("Saving your card…");
    const setup = await api("/api/pay-session-card", { method: "POST", body: { sessionId } });
    const outcome = await stripe.confirmCardSetup(setup.client_secret, {
      payment_method: { card },
    });
    if (outcome.error) throw cardProblem(outcome.error, "The card could not be used.");
    say("Paying with this card…");
    await pay({ setupIntentId: setup.setup_intent_id });
  });
});
