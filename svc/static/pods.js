// The pod list: keeps each pod's "Free" / "In use" / "Out of service" up to date while the page is open.
import { api } from "./common.js";

const main = document.getElementById("main");
const refreshMs = Number(main.dataset.refreshSeconds) * 1000;

async function refresh() {
  if (document.visibilityState !== "visible") return;
  let pods;
  try {
    pods = await api("/api/pods");
  } catch {
    // A missed refresh is harmless: the next one (or the booking page) tells the truth.
    return;
  }
  for (const pod of pods) {
    const state = document.querySelector(`[data-pod-id="${pod.id}"] [data-pod-state]`);
    if (!state) continue;
    const [text, kind] = pod.out_of_service
      ? ["Out of service", "out"]
      : pod.in_use
        ? ["In use", "in-use"]
        : ["Free", "free"];
    state.textContent = text;
    state.className = `state state--${kind}`;
  }
}

setInterval(refresh, refreshMs);
document.addEventListener("visibilitychange", refresh);
