"""A document as plain text: what a terminal, an email or a support ticket shows.

Dates are local to the customer's timezone (the period as its first and last
day, the issue and due dates); prices are shown per their unit ("$0.50 per
1,000", tier ranges); exact decimals stay in the "how each line was computed"
part, never in the table.
"""

from __future__ import annotations

from typing import Any

from meterline.billing.progressive import describe
from meterline.render.price_words import _qty, money_for, unit_price_lines

WIDTHS = [46, 16, 16]


def _row(cols: list[str], widths: list[int]) -> str:
    left = cols[0].ljust(widths[0])
    rest = [c.rjust(w) for c, w in zip(cols[1:], widths[1:], strict=True)]
    return "  ".join([left, *rest]).rstrip()


# Models whose notes say something a reader needs: a unit conversion (both numbers),
# a cap or a true-up, and which version's limit applied.
_NOTED_MODELS = frozenset(
    {"percentage", "graduated_percentage", "dynamic", "maximum_spend", "minimum_spend", "coupon"}
)


def _model_notes(line: dict[str, Any]) -> list[str]:
    notes = list((line.get("explanation") or {}).get("notes") or [])
    if line.get("model") in _NOTED_MODELS:
        return notes
    return [n for n in notes if " metered " in n]  # conversions: metered and billed quantity


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _header(doc: dict[str, Any]) -> list[str]:
    fin: dict[str, Any] = doc.get("finance") or {}
    title = {"invoice": "INVOICE", "credit_note": "CREDIT NOTE", "debit_note": "DEBIT NOTE"}[
        doc["kind"]
    ]
    number = doc.get("number") or "DRAFT (not issued)"
    period = doc["period"]
    out = [f"{title} {number}"]
    seller = fin.get("seller")
    if seller:
        who = ", ".join([seller["name"], *seller.get("address", [])])
        out.append(f"from:     {who}")
        if seller.get("tax_id"):
            out.append(f"          tax id {seller['tax_id']}")
    bill = fin.get("bill_to") or {}
    out.append(f"bill to:  {doc.get('customer_name', '')} ({doc['customer_id']})")
    for line in bill.get("address") or []:
        out.append(f"          {line}")
    out.append(
        f"status:   {doc['status']}"
        + ("  (issued before the period closed: forced)" if doc.get("forced") else "")
    )
    if fin.get("issue_date") and fin.get("due_date"):
        out.append(
            f"issued:   {fin['issue_date']}   due: {fin['due_date']} ({fin['payment_terms']})"
        )
    elif fin.get("issue_date"):
        out.append(f"issued:   {fin['issue_date']}")
    elif doc.get("number") is None:
        out.append(f"issued:   not yet (draft); payment terms {fin.get('payment_terms', 'net 30')}")
    local = fin.get("period_local")
    if local:
        out.append(
            f"period:   {period.get('label', '')}: {local['first_day']} to {local['last_day']} "
            f"({local['timezone']})"
        )
    else:
        out.append(
            f"period:   {period.get('label', '')} [{period['start']} .. {period['end']}) "
            f"{doc.get('timezone', '')}"
        )
    out.append(f"currency: {doc['currency']}")
    if doc.get("corrects"):
        out.append(f"corrects: {doc['corrects']}")
    for reason in doc.get("reasons", []):
        out.append(f"reason:   {reason}")
    progressive = describe(doc)
    if progressive:
        out.append(f"note:     {progressive}")
    return out


def render_text(doc: dict[str, Any], *, explain: bool = True) -> str:
    fin: dict[str, Any] = doc.get("finance") or {}
    money = money_for(str(doc["currency"]))
    out = _header(doc)
    out.append("")
    out.append(_row(["#  description", "quantity", "amount"], WIDTHS))
    rule = "-" * (sum(WIDTHS) + 4)
    out.append(rule)
    for line in doc["lines"]:
        desc = f"{line['line']:<3}{line['description']}"
        out.append(_row([desc[:46], _qty(line.get("quantity")), line["amount"]], WIDTHS))
        for price in unit_price_lines(line, money, str(doc.get("timezone") or "UTC")):
            out.append(f"     price {price}")
    out.append(rule)
    rate = fin.get("tax_percent") or doc.get("tax_rate", "0")
    totals = [("subtotal", doc["subtotal"]), (f"tax {rate}", doc["tax"])]
    if doc.get("credits_applied") and doc["credits_applied"].strip("0.-"):
        totals.append(("credits applied", "-" + doc["credits_applied"]))
    totals.append(("TOTAL " + doc["currency"], doc["total"]))
    for label, value in totals:
        out.append(_row([label, "", value], WIDTHS))
    if fin.get("tax_note"):
        out.append("")
        out.append(f"tax: {fin['tax_note']}")
    if explain:
        out.append("")
        out.append("how each line was computed:")
        for line in doc["lines"]:
            if "billed_amount" in line:
                billed_q, new_q = line.get("billed_quantity"), line.get("new_quantity")
                out.append(
                    f"  {line['line']}. {line['charge']}: billed {line['billed_amount']}"
                    + ("" if billed_q is None else f" for {billed_q}")
                    + f", now {line['new_amount']}"
                    + ("" if new_q is None else f" for {new_q}")
                )
                out.append(f"     now: {line['formula']}")
            else:
                out.append(f"  {line['line']}. {line['charge']}: {line['formula']}")
            for note in _model_notes(line):
                out.append(f"     {note}")
            usage = line.get("usage")
            if usage and "events_digest" in usage:
                w = usage["windows"]
                out.append(
                    f"     {_plural(usage['event_count'], 'event')} in "
                    f"{_plural(w['count'], 'window')} of {w['size']}"
                    f"; events digest {usage['events_digest'][:16]}"
                )
            elif usage:
                out.append(
                    f"     {_plural(usage['event_count'], 'event')} (windows of {usage['window']})"
                )
    out.append("")
    out.append(f"cutoff seq {doc['cutoff_seq']}; content hash {doc['content_hash']}")
    return "\n".join(out) + "\n"
