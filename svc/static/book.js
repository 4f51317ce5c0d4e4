// The booking page: save the card with Stripe.js, start the session (with the bank's approval
// of the hold on the card when it asks for one), show the door code.
import {
  api,
  CARD_UNAVAILABLE,
  formatLocalTime,
  mountCard,
  Problem,
  statusLine,
} from "./common.js";

const main = document.getElementById("main");
const { podName, publishableKey, timezone, turnstileSiteKey } = main.dataset;
const form = document.getElementById("booking-form");
const email = document.getElementById("email");
const button = form.querySelector('button[type="submit"]');
const status = document.getElementById("booking-status");
const result = document.getElementById("booking-result");

const EMAIL_HELP = "Enter your e-mail address, like name@example.com.";

const say = statusLine(status);

const { stripe = null, card = null } = mountCard(publishableKey, "#card-element") || {};
if (!stripe) {
  button.disabled = true;
  say(CARD_UNAVAILABLE, { error: true });
}

const UNREACHABLE = "We could not reach the card service. Check your connection and try again.";

// Stripe.js answers with its own errors, meant to be shown to the cardholder.
function cardProblem(error) {
  if (!error || error instanceof Error || !error.message) return new Problem(UNREACHABLE);
  if (error.code === "card_declined") {
    return new Problem(`${error.message} Please try another card.`);
  }
  return new Problem(error.message);
}

// The SetupIntent this tab was given for this pod, kept until the booking is made: a retry
// (a declined card, a reload) sends it back, and the service hands the same one out again
// while it is unconfirmed, instead of a new Customer and SetupIntent each time.
const SETUP_KEY = `qwip-setup:${podName}`;

function storedSetup(address) {
  try {
    const stored = JSON.parse(sessionStorage.getItem(SETUP_KEY) || "null");
    return stored && stored.email === address ? stored : null;
  } catch {
    return null;
  }
}

function storeSetup(setup, address) {
  try {
    if (setup) sessionStorage.setItem(SETUP_KEY, JSON.stringify({ ...setup, email: address }));
    else sessionStorage.removeItem(SETUP_KEY);
  } catch {
    // Storage refused (private mode, full): the page works, only without reuse.
  }
}

// Cloudflare Turnstile, when the service asks for it: one token per card setup.
let turnstileWidget = null;
let turnstileToken = null;
if (turnstileSiteKey) {
  try {
    turnstileWidget = window.turnstile.render("#turnstile", {
      sitekey: turnstileSiteKey,
      callback: (token) => {
        turnstileToken = token;
      },
      "expired-callback": () => {
        turnstileToken = null;
      },
      "error-callback": () => {
        turnstileToken = null;
      },
    });
  } catch {
    say("The check that you are not a robot could not load. Reload the page.", { error: true });
  }
}

function takeTurnstileToken() {
  if (!turnstileSiteKey) return {};
  const token = turnstileToken;
  if (!token) {
    throw new Problem(
      "Complete the check that you are not a robot (the box above the button), then try again.",
    );
  }
  // Each token is good for one card setup: the widget gets a fresh one for any retry.
  turnstileToken = null;
  if (turnstileWidget !== null) window.turnstile.reset(turnstileWidget);
  return { turnstileToken: token };
}

async function saveCard(address) {
  const earlier = storedSetup(address);
  const body = {
    podName,
    email: address,
    ...(earlier
      ? { setupIntentId: earlier.setup_intent_id, clientSecret: earlier.client_secret }
      : {}),
    ...takeTurnstileToken(),
  };
  let setup;
  try {
    setup = await api("/api/create-setup-intent", { method: "POST", body });
  } catch (problem) {
    if (problem.status === 422) throw new Problem(EMAIL_HELP);
    throw problem;
  }
  storeSetup(setup, address);
  const outcome = await stripe.confirmCardSetup(setup.client_secret, {
    payment_method: { card, billing_details: { email: address } },
  });
  if (outcome.error) throw cardProblem(outcome.error);
  return setup;
}

// The hold on the card (HOLD_MINUTES) is placed while the customer is here, so the bank may
// ask them to approve it: the service then answers 402 with the hold's client secret, Stripe.js
// shows the bank's window, and the service is asked again, which starts the session. Any other
// 402 is a hold the bank refused, told in the service's words.
async function startSession(setup) {
  const body = { setup_intent_id: setup.setup_intent_id, client_secret: setup.client_secret };
  try {
    return await api("/api/confirm-booking", { method: "POST", body });
  } catch (problem) {
    const asked = problem.status === 402 && problem.body && problem.body.requires_action;
    const secret = asked ? problem.body.payment_intent_client_secret : null;
    if (!secret) throw problem;
    say(problem.message);
    await approveHold(secret);
  }
  say("Starting your session…");
  // Once only: should the service still want an approval, its words are shown, no loop.
  return await api("/api/confirm-booking", { method: "POST", body });
}

const NOTHING_BOOKED = "Nothing was booked and nothing was taken from your card.";

async function approveHold(secret) {
  const outcome = await stripe.confirmCardPayment(secret);
  if (outcome.error) throw holdProblem(outcome.error);
  const intent = outcome.paymentIntent;
  // Approved, the hold waits to be captured; refused, Stripe wants another card.
  if (!intent || !["requires_capture", "succeeded"].includes(intent.status)) {
    throw holdProblem(intent ? intent.last_payment_error : null);
  }
}

// Stripe.js's own words for a refused approval, or ours.
function holdProblem(error) {
  // Whether the bank approved is then unknown: the retry asks the service, which knows.
  if (error instanceof Error) return new Problem(UNREACHABLE, { retryable: true });
  const reason = (error && error.message) || "Your bank did not approve the hold on your card.";
  return new Problem(`${reason} ${NOTHING_BOOKED}`);
}

function showBooking(booking) {
  document.getElementById("result-code").textContent = booking.access_code;
  document.getElementById("result-pod").textContent = booking.pod_name;
  document.getElementById("result-start").textContent = formatLocalTime(
    booking.start_time,
    timezone,
  );
  document.getElementById("result-link").href = booking.end_session_url;
  // As attributes: the stylesheet hides the inert panel, in browsers without inert too.
  form.toggleAttribute("inert", true);
  result.toggleAttribute("inert", false);
  document.getElementById("result-title").focus();
}

// An earlier session of this customer is still owed (by e-mail or card): the service
// answers 409 with its pay page, which is offered here.
function showPayLink(problem) {
  const payUrl = problem.body && problem.body.pay_url;
  const link = document.getElementById("booking-pay-link");
  if (payUrl) link.href = payUrl;
  document.getElementById("booking-pay").hidden = !payUrl;
}

// A card Stripe has confirmed but whose session has not started yet: when starting it fails
// for a reason worth retrying (network, 5xx), the retry starts it without saving the card again.
let confirmedSetup = null;
let busy = false;
let booked = false;

function setBusy(on) {
  busy = on;
  button.disabled = on || booked;
  button.setAttribute("aria-busy", String(on));
  email.readOnly = on;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  if (busy || booked || !stripe) return;
  const address = email.value.trim();
  if (!email.checkValidity() || !address) {
    say(EMAIL_HELP, { error: true });
    email.focus();
    return;
  }
  setBusy(true);
  try {
    if (!confirmedSetup) {
      say("Saving your card…");
      confirmedSetup = await saveCard(address);
    }
    say("Starting your session…");
    const booking = await startSession(confirmedSetup);
    booked = true;
    storeSetup(null);
    say("");
    showBooking(booking);
  } catch (error) {
    const problem =
      error instanceof Problem ? error : new Problem("Something went wrong. Please try again.");
    if (!problem.retryable) confirmedSetup = null;
    say(problem.message, { error: true });
    showPayLink(problem);
  } finally {
    setBusy(false);
  }
});
