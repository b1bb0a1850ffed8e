"""A screenshot of the web page over the demo's index with the `agent` preset, after one feedback
round (the first hit marked relevant, the second not). Needs Debian's chromium and playwright (the
dev extra) and the demo's index (`viewfinder demo`).

Usage: python reports/scripts/serve_screenshot.py [INDEX] [OUT.png]
"""

import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

port = 8765
INDEX = sys.argv[1] if len(sys.argv) > 1 else str(Path.home() / ".cache/viewfinder/demo/index-default")
OUT = sys.argv[2] if len(sys.argv) > 2 else "reports/serve/page-demo-agent.png"
srv = subprocess.Popen(
    [".venv/bin/viewfinder", "serve", "--index", INDEX, "--config", "agent", "--port", str(port)],
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    text=True,
)
try:
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
            break
        except Exception:
            time.sleep(1)
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(),
            executable_path="/usr/bin/chromium",
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
            viewport={"width": 1366, "height": 768},
        )
        page = ctx.new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        page.fill("#q-text", "a large star")
        page.click("#search-btn")
        page.wait_for_selector("#grid .hit", timeout=120000)
        time.sleep(1)
        cards = page.locator("#grid .hit")
        cards.nth(0).click()
        cards.nth(1).locator(".mark-no").click()
        page.click("#next-round")
        page.wait_for_selector("#rewritten-query", timeout=180000)
        time.sleep(1)
        print("rewritten:", page.inner_text("#rewritten-query"))
        page.screenshot(path=OUT)
        ctx.close()
finally:
    srv.terminate()
    print(srv.stdout.read()[-1500:] if srv.stdout else "")
