// Drives the node's dashboard in headless Chromium for tests/dashboard.rs.
//   node dashboard.mjs <dashboard url> <screenshot path>
// Prints `three` once it shows three live nodes and queue `jobs` holding two messages (the
// test then kills one node), then
// `down <name>` once it shows that node down, and saves a screenshot either way.
import { chromium } from "playwright-core";

const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let status = 0;
const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
try {
  await page.goto(url);
  await page.waitForFunction(() => {
    const rows = [...document.querySelectorAll("#nodes tr[data-node]")];
    return rows.length === 3 && rows.every((r) => r.dataset.status === "ok")
      && document.getElementById("live").textContent === "live";
  }, null, { timeout: 30000 });
  // The catalog hides the built-ins until asked.
  if (await page.locator('#catalog tr[data-function="echo"]').count() !== 0) {
    throw new Error("built-ins shown before the toggle");
  }
  await page.check("#builtins");
  await page.locator('#catalog tr[data-function="echo"]').waitFor({ timeout: 5000 });
  // The queue the test made on this node, with the two messages it sent.
  await page.locator('#queues tr[data-queue="jobs"][data-depth="2"]').waitFor({ timeout: 10000 });
  console.log("three");
  const down = await page.waitForFunction(() => {
    const row = document.querySelector('#nodes tr[data-status="down"]');
    return row && row.dataset.node;
  }, null, { timeout: 30000 });
  const name = await down.jsonValue();
  // What the page says of it, as a reader sees it.
  const text = await page.locator(`#nodes tr[data-node="${name}"] td.status`).innerText();
  console.log(`down ${name} ${text}`);
} catch (e) {
  console.log(`failed: ${e.message.split("\n")[0]}`);
  status = 1;
} finally {
  await page.screenshot({ path: shot, fullPage: true });
  await browser.close();
}
process.exit(status);
