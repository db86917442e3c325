import { test, expect } from "@playwright/test";
import * as http from "node:http";
import { E2E_SINK, FORWARDING_PORT } from "../playwright.config";
import { collectConsoleErrors, hydrated, postSigned, queued, randomUUID } from "./helpers";

const ORIGIN = `http://127.0.0.1:${FORWARDING_PORT}`;

/** The sink, served by the test: down (503) until `up` is set, then accepting; it records
 * the idempotency keys it accepted. */
function startSink() {
  const state = { up: false, accepted: [] as string[] };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (!state.up) {
        res.writeHead(503, { "content-type": "text/plain" });
        res.end("maintenance");
        return;
      }
      state.accepted.push(String(req.headers["idempotency-key"]));
      res.writeHead(202);
      res.end();
    });
  });
  return { state, server };
}

test("the wallboard shows forwarding pause live, and its end when the sink is back", async ({ page, request }) => {
  const { state, server } = startSink();
  const { port } = new URL(E2E_SINK);
  await new Promise<void>((resolve) => server.listen(Number(port), "127.0.0.1", resolve));
  try {
    const errors = collectConsoleErrors(page);
    await page.goto(`${ORIGIN}/`);
    await hydrated(page);
    await expect(page.getByTestId("forwarding")).toBeVisible();
    await expect(page.getByTestId("forward-paused")).toHaveCount(0);

    const event = queued(`q-fwd-${randomUUID()}`, "Forwarded queue");
    await postSigned(request, event, ORIGIN);
    // The sink is down: forwarding pauses, the page says why, without a reload.
    const paused = page.getByTestId("forward-paused");
    await expect(paused).toContainText("Forwarding paused");
    await expect(paused).toContainText("503 Service Unavailable: maintenance");
    await expect(page.getByTestId("count-forward-waiting")).toHaveText("1");

    // Back up: the probe succeeds, the banner goes, nothing waits, delivered once.
    state.up = true;
    await expect(paused).toHaveCount(0);
    await expect(page.getByTestId("count-forward-waiting")).toHaveText("0");
    expect(state.accepted).toEqual([event.id]);
    expect(errors).toEqual([]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
