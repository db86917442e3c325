import { test, expect, type Page } from "@playwright/test";
import * as http from "node:http";
import { E2E_OTHER_SITE, E2E_PORTAL } from "../playwright.config";
import { postSigned, queued, randomUUID } from "./helpers";

/** A real portal page served at `origin` (a local server of the test's own) that frames
 * `widgetUrl` and records the height messages it receives. */
async function portal(page: Page, origin: string, widgetUrl: string) {
  const html = `<!DOCTYPE html><html><body>
    <iframe id="status" src="${widgetUrl}" style="width:320px;border:0"></iframe>
    <script>
      window.heights = [];
      window.addEventListener("message", (e) => {
        if (e.data && e.data.type === "gc-status:height") {
          window.heights.push({ origin: e.origin, height: e.data.height });
          document.getElementById("status").style.height = e.data.height + "px";
        }
      });
    </script></body></html>`;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(html);
  });
  const { port } = new URL(origin);
  await new Promise<void>((resolve) => server.listen(Number(port), "127.0.0.1", resolve));
  servers.push(server);
  await page.goto(`${origin}/`);
}

const servers: http.Server[] = [];
test.afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((resolve) => server.close(resolve));
});

test("the widget renders inside the portal's iframe and reports its height", async ({ page, request, baseURL }) => {
  const queueId = `q-widget-${randomUUID()}`;
  await postSigned(request, queued(queueId, "Widget queue"));
  await portal(page, E2E_PORTAL, `${baseURL}/widget/${queueId}`);
  const frame = page.frameLocator("#status");
  await expect(frame.locator('[data-hydrated="true"]')).toBeVisible();
  const card = frame.locator(`li[data-queue="${queueId}"]`);
  await expect(card.getByTestId("queue-waiting")).toHaveText("1");
  // Only this queue is shown on /widget/{queue}.
  await expect(frame.locator("li[data-queue]")).toHaveCount(1);
  // Live without reload.
  await postSigned(request, queued(queueId, "Widget queue"));
  await expect(card.getByTestId("queue-waiting")).toHaveText("2");
  await expect
    .poll(() => page.evaluate(() => (window as any).heights.length))
    .toBeGreaterThan(0);
  const heights = await page.evaluate(() => (window as any).heights);
  expect(heights[0].origin).toBe(new URL(baseURL!).origin);
  expect(heights[0].height).toBeGreaterThan(50);
});

test("another origin may not frame the widget, and no origin may frame other pages", async ({ page, baseURL }) => {
  const refused: string[] = [];
  page.on("console", (msg) => {
    if (msg.text().includes("frame-ancestors")) refused.push(msg.text());
  });
  await portal(page, E2E_OTHER_SITE, `${baseURL}/widget`);
  await expect.poll(() => refused.length).toBeGreaterThan(0);
  await expect(page.frameLocator("#status").locator("#gc-widget")).toHaveCount(0);

  refused.length = 0;
  await portal(page, E2E_PORTAL, `${baseURL}/`);
  await expect.poll(() => refused.length).toBeGreaterThan(0);
  await expect(page.frameLocator("#status").locator("main.wallboard")).toHaveCount(0);
});

test("the widget is legible in a 300 px wide frame", async ({ browser, request }) => {
  const context = await browser.newContext({ viewport: { width: 300, height: 400 } });
  const page = await context.newPage();
  const queueId = `q-narrow-${randomUUID()}`;
  await postSigned(request, queued(queueId, "A queue with a rather long name"));
  await page.goto(`/widget/${queueId}`);
  const card = page.locator(`li[data-queue="${queueId}"]`);
  await expect(card).toBeVisible();
  // Nothing overflows sideways.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  expect(overflow).toBeLessThanOrEqual(0);
  await context.close();
});
