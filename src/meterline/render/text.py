"""A document as plain text: what a terminal, an email or a support ticket shows."""

from __future__ import annotations

from typing import Any


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


def render_text(doc: dict[str, Any], *, explain: bool = True) -> str:
    title = {"invoice": "INVOICE", "credit_note": "CREDIT NOTE", "debit_note": "DEBIT NOTE"}[
        doc["kind"]
    ]
    number = doc.get("number") or "DRAFT (not issued)"
    period = doc["period"]
    out = [
        f"{title} {number}",
        f"status:   {doc['status']}"
        + ("  (issued before the period closed: forced)" if doc.get("forced") else ""),
        f"customer: {doc.get('customer_name', '')} ({doc['customer_id']})",
        f"period:   {period.get('label', '')} [{period['start']} .. {period['end']}) {doc.get('timezone', '')}",
        f"currency: {doc['currency']}",
    ]
    if doc.get("corrects"):
        out.append(f"corrects: {doc['corrects']}")
    for reason in doc.get("reasons", []):
        out.append(f"reason:   {reason}")
    out.append("")
    widths = [44, 16, 14, 14]
    out.append(_row(["#  description", "quantity", "unit price", "amount"], widths))
    out.append("-" * (sum(widths) + 6))
    for line in doc["lines"]:
        desc = f"{line['line']:<3}{line['description']}"
        out.append(
            _row(
                [
                    desc[:44],
                    line.get("quantity") or "",
                    line.get("unit_price") or "",
                    line["amount"],
                ],
                widths,
            )
        )
    out.append("-" * (sum(widths) + 6))
    totals = [("subtotal", doc["subtotal"]), (f"tax ({doc.get('tax_rate', '0')})", doc["tax"])]
    if doc.get("credits_applied") and doc["credits_applied"].strip("0.-"):
        totals.append(("credits applied", "-" + doc["credits_applied"]))
    totals.append(("TOTAL " + doc["currency"], doc["total"]))
    for label, value in totals:
        out.append(_row([label, "", "", value], widths))
    if explain:
        out.append("")
        out.append("how each line was computed:")
        for line in doc["lines"]:
            if "billed_amount" in line:
                out.append(
                    f"  {line['line']}. {line['charge']}: billed {line['billed_amount']} for "
                    f"{line['billed_quantity']}, now {line['new_amount']} for {line['new_quantity']}"
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
                    f"     {usage['event_count']:,} events in {w['count']} windows of {w['size']}"
                    f"; events digest {usage['events_digest'][:16]}"
                )
            elif usage:
                out.append(f"     {usage['event_count']:,} events (windows of {usage['window']})")
    out.append("")
    out.append(f"cutoff seq {doc['cutoff_seq']}; content hash {doc['content_hash']}")
    return "\n".join(out) + "\n"
