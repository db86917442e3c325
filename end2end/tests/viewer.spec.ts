import { test, expect } from "@playwright/test";
import { E2E_VIEWER_TOKEN, VIEWER_PORT } from "../playwright.config";

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
