import { test, expect } from "@playwright/test";
import * as http from "node:http";
import { E2E_SINK, FORWARDING_PORT } from "../playwright.config";
import { collectConsoleErrors, hydrated, postSigned, queued, randomUUID, signIn } from "./helpers";

const ORIGIN = `http://127.0.0.1:${FORWARDING_PORT}`;

/** The sink, served by the test: answers `state.status` (503 "maintenance", 400 "missing
 * field", else 202) and records the idempotency keys it accepted. */
function startSink(status: number) {
  const state = { status, accepted: [] as string[] };
  const server = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => {
      if (state.status !== 202) {
        res.writeHead(state.status, { "content-type": "text/plain" });
        res.end(state.status === 503 ? "maintenance" : "missing field");
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
  const { state, server } = startSink(503);
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
    state.status = 202;
    await expect(paused).toHaveCount(0);
    await expect(page.getByTestId("count-forward-waiting")).toHaveText("0");
    expect(state.accepted).toEqual([event.id]);
    expect(errors).toEqual([]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});

test("a record the sink refuses is a dead letter of the sink stage, replayed from the console", async ({
  page,
  request,
}) => {
  const { state, server } = startSink(400);
  const { port } = new URL(E2E_SINK);
  await new Promise<void>((resolve) => server.listen(Number(port), "127.0.0.1", resolve));
  try {
    const event = queued(`q-fwd-${randomUUID()}`, "Refused queue");
    await postSigned(request, event, ORIGIN);
    await signIn(page, "/admin/dead-letters?stage=sink", ORIGIN);
    await expect(page.getByTestId("filter-stage")).toHaveValue("sink");
    const row = page.locator(`tr[data-letter="${event.id}"]`);
    await expect(row).toBeVisible();
    await expect(row.getByTestId("stage")).toHaveText("Forwarding to the sink");
    await expect(row).toContainText("sink answered 400 Bad Request: missing field");

    // Fixed: replay sends it again, once.
    state.status = 202;
    await row.getByTestId("replay").click();
    await expect(page.getByTestId("console-result")).toContainText("Replayed 1 dead letter");
    await expect(row).toHaveCount(0);
    await expect.poll(() => state.accepted).toEqual([event.id]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
