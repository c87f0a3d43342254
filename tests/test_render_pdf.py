"""The PDF rendering of documents (DESIGN §7): content, explanation, determinism, escaping.

Documents are real: issued from a store (invoice with graduated tiers, a flat
fee, a minimum true-up, tax and credits; a Tokyo customer billed in yen; a
debit and a credit note from re-rating). Text is read back with pypdf.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfReader
from tests.billing_support import FEB, FEB_US, clock, close_january
from tests.support import event, ingest
from weasyprint import HTML

from meterline.domain.timestamps import parse_rfc3339
from meterline.render.pdf import Seller, _NoFetch, render_html, render_pdf
from meterline.services import invoicing
from meterline.services.catalog import apply_catalog
from meterline.services.corrections import rerate
from meterline.services.retraction import retract_event
from meterline.store.database import Store, open_store

LATER = "2024-02-03T00:00:00Z"
CLI = [sys.executable, "-m", "meterline", "--now", LATER]
RENDER = ["invoice", "render", "INV-000002", "--format", "pdf"]
SELLER = Seller("Meterline Cloud Ltd", ("1 Harbour Street", "London"), "GB123456789", "b@x.test")

CATALOG: dict[str, Any] = {
    "meters": [
        {
            "code": "api_calls",
            "event_type": "api_call",
            "aggregation": "count",
            "group_by": ["region"],
        }
    ],
    "price_books": [
        {
            "code": "standard",
            "currency": "USD",
            "versions": [
                {
                    "version": "v1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "minimum_spend": "100.00",
                    "charges": [
                        {
                            "code": "api",
                            "meter": "api_calls",
                            "model": "graduated",
                            "tiers": [
                                {"up_to": 100, "unit_price": "0.20"},
                                {"up_to": None, "unit_price": "0.15", "flat_fee": "5.00"},
                            ],
                        },
                        {"code": "platform", "model": "flat", "amount": "49.00"},
                    ],
                }
            ],
        },
        {
            "code": "jp",
            "currency": "JPY",
            "versions": [
                {
                    "version": "2024.1",
                    "effective_from": "2024-01-01T00:00:00Z",
                    "charges": [
                        {
                            "code": "api",
                            "meter": "api_calls",
                            "model": "graduated",
                            "tiers": [{"up_to": None, "unit_price": "1500.5"}],
                        }
                    ],
                }
            ],
        },
    ],
    "customers": [
        {
            "id": "acme",
            "name": "Acme Corp",
            "currency": "USD",
            "tax_rate": "0.20",
            "subscriptions": [{"price_book": "standard", "start": "2024-01-01T00:00:00Z"}],
            "credits": [{"id": "welcome", "amount": "10.00", "granted_at": "2024-01-01T00:00:00Z"}],
        },
        {
            "id": "tokyo",
            "name": "Tokyo KK",
            "currency": "JPY",
            "timezone": "Asia/Tokyo",
            "tax_rate": "0.10",
            "subscriptions": [{"price_book": "jp", "start": "2024-01-01T00:00:00Z"}],
        },
    ],
}


def calls(n: int, prefix: str, customer: str = "acme", region: str = "eu") -> list[dict[str, Any]]:
    return [
        event(
            f"{prefix}{i}",
            customer=customer,
            time=f"2024-01-{10 + i % 10:02d}T{i % 24:02d}:00:00Z",
            props={"region": region},
        )
        for i in range(n)
    ]


def issue_january(store: Store) -> dict[str, dict[str, Any]]:
    """INV-000001 (acme: tiers, flat fee, minimum true-up, tax, credit), INV-000002 (tokyo)."""
    apply_catalog(store, CATALOG, parse_rfc3339("2023-12-01T00:00:00Z"))
    ingest(store, clock(FEB), calls(150, "eu") + calls(7, "jp", "tokyo", "apne1"))
    close_january(store)
    return {d.number: d.to_dict() for d in invoicing.issue(store, "2024-01", FEB_US).issued}


def build(store: Store) -> dict[str, dict[str, Any]]:
    """The two invoices, then DN-000001 (late usage) and CN-000001 (retractions) for acme."""
    docs = issue_january(store)
    later = parse_rfc3339(LATER)
    ingest(store, clock(LATER), calls(600, "late"))  # usage passes the minimum
    docs.update({d.number: d.to_dict() for d in rerate(store, later, "acme", "2024-01").issued})
    for i in range(300):
        retract_event(store, "default", f"late{i}", "sent twice", later)
    docs.update({d.number: d.to_dict() for d in rerate(store, later, "acme", "2024-01").issued})
    return docs


@pytest.fixture(scope="module")
def docs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, Any]]]:
    """The documents, built once on SQLite, for the tests that only need a document."""
    s = open_store(f"sqlite:///{tmp_path_factory.mktemp('pdf') / 'm.db'}")
    s.upgrade()
    yield build(s)
    s.dispose()


def pages(pdf: bytes) -> list[str]:
    """Each page's text with whitespace removed (wrapping cannot break a match)."""
    return [re.sub(r"\s+", "", page.extract_text()) for page in PdfReader(BytesIO(pdf)).pages]


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def usd(text: str) -> str:
    return squash(f"-${text[1:]}" if text.startswith("-") else f"${text}")


def test_each_kind_of_document_renders(store: Store) -> None:
    docs = build(store)
    assert sorted(docs) == ["CN-000001", "DN-000001", "INV-000001", "INV-000002"]

    inv = docs["INV-000001"]
    charges = [line["charge"] for line in inv["lines"]]
    assert charges == ["api", "platform", "minimum_spend"]
    assert inv["credits_applied"] == "10.00" and inv["tax"] != "0.00"
    first, *rest = pages(render_pdf(inv, SELLER))
    for text in ("INVOICE", "INV-000001", "AcmeCorp", "MeterlineCloudLtd", "TaxID:GB123456789"):
        assert text in first
    for line in inv["lines"]:
        assert usd(line["amount"]) in first
    for label, value in (
        ("Subtotal", inv["subtotal"]),
        ("Tax20%", inv["tax"]),
        ("Prepaidcredit(welcome)", "-" + inv["credits_applied"]),
        ("Totaldue(USD)", inv["total"]),
    ):
        assert label + usd(value) in first
    assert "January1,2024–January31,2024" in first
    explained = "".join(rest)
    assert "Howeachlinewascomputed" in explained
    assert squash(inv["lines"][0]["formula"]) in explained
    assert "meterlineexplainINV-000001--line1--events" in explained

    tokyo = docs["INV-000002"]
    assert tokyo["currency"] == "JPY" and "." not in tokyo["total"]
    first, *_ = pages(render_pdf(tokyo, SELLER))
    assert "TokyoKK" in first and "Asia/Tokyo" in first
    assert f"Totaldue(JPY)¥{int(tokyo['total']):,}" in first
    assert f"¥{int(tokyo['lines'][0]['amount']):,}" in first

    debit = docs["DN-000001"]
    first, *_ = pages(render_pdf(debit, SELLER))
    assert "DEBITNOTE" in first and "DN-000001" in first
    assert "CorrectsinvoiceINV-000001" in first
    assert "Totaldue(USD)" + usd(debit["total"]) in first

    credit = docs["CN-000001"]
    assert credit["total"].startswith("-")
    first, *rest = pages(render_pdf(credit, SELLER))
    assert "CREDITNOTE" in first and "CN-000001" in first
    assert "CorrectsinvoiceINV-000001" in first
    assert "Totalcredited(USD)" + usd(credit["total"]) in first
    api = credit["lines"][0]
    assert "billed" + usd(api["billed_amount"]) in first
    assert "Billedsofar" in "".join(rest)


def test_explanation_page_shows_the_tier_breakdown(docs: dict[str, dict[str, Any]]) -> None:
    inv = docs["INV-000001"]
    line = inv["lines"][0]
    assert line["formula"] == "100 x 0.20 + 50 x 0.15 + 5.00 (tier 2 flat fee) = 32.50"
    first, *rest = pages(render_pdf(inv, SELLER))
    assert squash(line["formula"]) not in first  # page one is the invoice, not the workings
    explained = "".join(rest)
    assert squash(line["formula"]) in explained
    assert "0–100100$0.20$0.00$20.00" in explained  # tier, range, units, price, fee, amount
    assert "over10050$0.15$5.00$12.50" in explained
    assert "events_digest" not in line["usage"] and "Eventsdigest" not in explained
    assert "150events" in explained
    assert inv["content_hash"] in explained and inv["document_hash"] in explained


def test_output_is_deterministic(
    docs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = docs["INV-000001"]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    first = render_pdf(inv, SELLER)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 86_400 * 400)  # another day entirely
    assert render_pdf(copy.deepcopy(inv), SELLER) == first
    assert os.environ.get("SOURCE_DATE_EPOCH") == epoch
    info = PdfReader(BytesIO(first)).metadata
    assert info is not None and info.creation_date is not None
    assert info.creation_date.strftime("%Y-%m-%dT%H:%M:%SZ") == inv["issued_at"][:19] + "Z"
    assert b"/URI" not in first  # no links, nothing to fetch


HOSTILE = '<script>alert("x")</script><img src="http://evil.test/p.png"><b>&amp;</b>'


def test_hostile_strings_are_escaped(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["INV-000001"])
    doc["customer_name"] = "Evil " + HOSTILE
    doc["customer_id"] = "id" + HOSTILE
    doc["reasons"] = [HOSTILE]
    doc["corrects"] = "INV-1" + HOSTILE
    line = doc["lines"][0]
    line["dimensions"] = {"region" + HOSTILE: HOSTILE}
    line["description"] = "api " + HOSTILE
    seller = Seller("Seller " + HOSTILE, ("</style>" + HOSTILE,), HOSTILE, HOSTILE)
    page = render_html(doc, seller)
    for tag in ("<script", "<img", "<b>", "</style><"):
        assert tag not in page
    assert page.count("</style>") == 1
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "&amp;amp;" in page  # an entity in the data stays text, it is not decoded
    text = "".join(pages(render_pdf(doc, seller)))
    assert squash("Evil " + '<script>alert("x")</script>') in text
    assert "SellerSeller" not in text


def test_the_renderer_fetches_nothing(caplog: pytest.LogCaptureFixture) -> None:
    page = '<img src="http://192.0.2.1/x.png"><link rel="stylesheet" href="file:///etc/passwd">'
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        HTML(string=page, url_fetcher=_NoFetch()).write_pdf()
    refused = [r.getMessage() for r in caplog.records if "fetch nothing" in r.getMessage()]
    assert len(refused) == 2


def test_drafts_say_so_and_are_not_numbered(docs: dict[str, dict[str, Any]]) -> None:
    doc = copy.deepcopy(docs["INV-000001"])
    for key in ("issued_at", "previous_hash", "document_hash"):
        doc.pop(key)
    doc.update(number=None, status="draft")
    first, *_ = pages(render_pdf(doc, SELLER))
    assert "DRAFT—notavalidinvoice" in first and "DRAFT(nonumber)" in first
    assert "INV-000001" not in first


def test_seller_from_environment() -> None:
    seller = Seller.from_env(
        {
            "METERLINE_SELLER_NAME": " Example GmbH ",
            "METERLINE_SELLER_ADDRESS": "Hauptstr. 1| 10115 Berlin ||Germany",
            "METERLINE_SELLER_TAX_ID": "DE123",
        }
    )
    assert seller == Seller("Example GmbH", ("Hauptstr. 1", "10115 Berlin", "Germany"), "DE123")
    assert Seller.from_env({}).name == "meterline demo seller"


def test_cli_renders_a_pdf_file(store: Store, tmp_path: Path) -> None:
    issue_january(store)
    out = tmp_path / "inv.pdf"
    env = {**os.environ, "METERLINE_SELLER_NAME": "Env Seller SA"}
    proc = subprocess.run(
        [*CLI, "--db", store.url, *RENDER, "-o", str(out)],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().strip() == f"wrote {out}"
    first, *_ = pages(out.read_bytes())
    assert "INV-000002" in first and "TokyoKK" in first and "EnvSellerSA" in first
