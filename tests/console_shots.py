"""Screenshots of the console's main pages, for docs/CONSOLE.md.

Run `.venv/bin/python tests/console_shots.py [docs/console]`: it seeds a
demo-like store, serves it, and saves one PNG per page through real Chromium.
The browser tests call `capture` too, so the pages photographed are the pages
tested.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.console_env import Seeded, chromium, login, seed, start_console  # noqa: E402

VIEWPORT = {"width": 1360, "height": 900}


def capture(browser: Any, base: str, seeded: Seeded, out: Path) -> list[Path]:
    """Log in and photograph the main pages; returns the PNGs written."""
    out.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
    page = context.new_page()
    shots: list[Path] = []

    def shot(name: str, path: str | None = None, full: bool = True) -> None:
        if path is not None:
            page.goto(base + path)
        target = out / f"{name}.png"
        page.screenshot(path=str(target), full_page=full)
        shots.append(target)

    try:
        page.goto(base + "/console/login")
        shot("login", full=False)
        login(page, base)
        shot("overview", "/console")
        shot("customers", "/console/customers")
        shot("customer", f"/console/customers/{seeded.late_customer}")
        shot("invoices", "/console/invoices")
        shot("invoice", f"/console/invoices/{seeded.late_invoice}")
        shot("line", f"/console/invoices/{seeded.late_invoice}/lines/1")
        shot("events", f"/console/invoices/{seeded.late_invoice}/lines/1/events", full=False)
        shot("rerate", f"/console/invoices/{seeded.late_invoice}/rerate")
        shot("quarantine", "/console/quarantine", full=False)
        shot("quarantine-entry", f"/console/quarantine/{seeded.fixable_quarantine_id}")
        shot("price-books", "/console/price-books")
        shot("audit", "/console/audit", full=False)
        page.goto(f"{base}/console/invoices/{seeded.late_invoice}")
        page.fill("input[name=days]", "14")
        page.click("text=Create read-only link")
        link = page.input_value("input.copy")
        shared = browser.new_context(viewport=VIEWPORT).new_page()
        shared.goto(link)
        target = out / "share.png"
        shared.screenshot(path=str(target), full_page=True)
        shots.append(target)
        shared.context.close()
    finally:
        context.close()
    return shots


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "docs" / "console"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seeded = seed(work / "store")
        server = start_console(seeded.db_url, work)
        try:
            with chromium() as browser:
                for p in capture(browser, server.url, seeded, out):
                    print(p)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
