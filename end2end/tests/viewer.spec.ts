import { test, expect } from "@playwright/test";
import * as http from "node:http";
import { E2E_CROSS_SITE_PORTAL, E2E_VIEWER_TOKEN, VIEWER_PORT } from "../playwright.config";
import { postSigned, queued, randomUUID } from "./helpers";

const viewerBase = `http://127.0.0.1:${VIEWER_PORT}`;

test("with a viewer token, the dashboard needs the viewer link, which becomes a session cookie", async ({
  page,
}) => {
  const refused = await page.goto(`${viewerBase}/`);
  expect(refused?.status()).toBe(401);
  await expect(page.locator("body")).toContainText("needs its viewer link");

  const wrong = await page.goto(`${viewerBase}/?token=nope`);
  expect(wrong?.status()).toBe(401);

  await page.goto(`${viewerBase}/widget?token=${E2E_VIEWER_TOKEN}`);
  // The token is exchanged and leaves the URL.
  await expect(page).toHaveURL(`${viewerBase}/widget`);
  await expect(page.locator('[data-hydrated="true"]')).toBeVisible();
  await page.goto(`${viewerBase}/`);
  await expect(page.getByTestId("count-total")).toHaveText(/^\d+$/);
  // Still no admin controls for a viewer.
  await expect(page.getByTestId("sign-out")).toHaveCount(0);

});

test("the JSON API takes the viewer token as a bearer token", async ({ request }) => {
  const without = await request.get(`${viewerBase}/api/v2/queues`);
  expect(without.status()).toBe(401);
  expect((await without.json()).error).toBe("viewer_token_required");
  const withToken = await request.get(`${viewerBase}/api/v2/queues`, {
    headers: { authorization: `Bearer ${E2E_VIEWER_TOKEN}` },
  });
  expect(withToken.status()).toBe(200);
  // Webhooks and health checks never need it.
  expect((await request.get(`${viewerBase}/readyz`)).status()).toBe(200);
});

test("the widget works in a portal on another site with the viewer token in its iframe, writing no session", async ({
  page,
  request,
}) => {
  const queueId = `q-cross-${randomUUID()}`;
  await postSigned(request, queued(queueId, "Cross-site queue"), viewerBase);
  const widgetUrl = `${viewerBase}/widget/${queueId}?token=${E2E_VIEWER_TOKEN}`;
  const html = `<!DOCTYPE html><html><body>
    <iframe id="status" src="${widgetUrl}" style="width:320px;height:240px;border:0"></iframe>
    </body></html>`;
  const server = http.createServer((_req, res) => {
    res.writeHead(200, { "content-type": "text/html" });
    res.end(html);
  });
  const { port } = new URL(E2E_CROSS_SITE_PORTAL);
  await new Promise<void>((resolve) => server.listen(Number(port), "127.0.0.1", resolve));
  const cookies: string[] = [];
  page.on("response", (response) => {
    const setCookie = response.headers()["set-cookie"];
    if (response.url().startsWith(viewerBase) && setCookie) cookies.push(setCookie);
  });
  try {
    await page.goto(`${E2E_CROSS_SITE_PORTAL}/`);
    const frame = page.frameLocator("#status");
    await expect(frame.locator('[data-hydrated="true"]')).toBeVisible();
    const card = frame.locator(`li[data-queue="${queueId}"]`);
    await expect(card.getByTestId("queue-waiting")).toHaveText("1");
    // Live through the stream, which the frame opens with the token (no cookie reaches it).
    await postSigned(request, queued(queueId, "Cross-site queue"), viewerBase);
    await expect(card.getByTestId("queue-waiting")).toHaveText("2");
    await page.reload();
    await expect(page.frameLocator("#status").locator('[data-hydrated="true"]')).toBeVisible();
    expect(cookies).toEqual([]);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
