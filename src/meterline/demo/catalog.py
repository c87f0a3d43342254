"""The demo's catalog: three meters, four price books, and the workload's customers.

Chosen to exercise what a real month does: a graduated book whose tiers change
mid-month (v2 from the 15th, tier position carried across), a volume book in
EUR, a JPY book with whole-yen rounding, flat platform fees, package pricing
per model, a minimum spend, tax rates, prepaid credits, customers in three
timezones, a coupon, a usage cap, a fee billed in advance, one anniversary
subscription, one progressive (threshold) subscription, and one customer the
catalog does not know (its usage stays unbilled, and reconciliation says so).
"""

from __future__ import annotations

from typing import Any

from meterline.demo.workload import Workload

MONTH_START = "2024-01-01T00:00:00Z"
MID_MONTH = "2024-01-15T00:00:00Z"
# Books for customers east of UTC start a day early: their January begins before
# 2024-01-01T00:00Z (local midnight), and a subscription starting then needs a price.
EARLY_START = "2023-12-31T00:00:00Z"
# Local midnight of 2024-01-01: a subscription from then covers the whole month.
LOCAL_MONTH_START = {
    "Europe/Berlin": "2023-12-31T23:00:00Z",
    "Asia/Tokyo": "2023-12-31T15:00:00Z",
}

SELLER: dict[str, Any] = {
    "name": "Meterline Demo GmbH",
    "address": ["Friedrichstraße 68", "10117 Berlin", "Germany"],
    "tax_id": "DE 123 456 789",
    "email": "billing@meterline.example",
}

METERS: list[dict[str, Any]] = [
    {
        "code": "api_calls",
        "event_type": "api_call",
        "aggregation": "count",
        "window": "1h",
        "allowed_lateness": "3h",
    },
    {
        "code": "tokens",
        "event_type": "llm_call",
        "aggregation": "sum",
        "property": "tokens",
        "group_by": ["model"],
        "window": "1h",
        "allowed_lateness": "3h",
    },
    {
        "code": "storage_gb_hours",
        "event_type": "storage",
        "aggregation": "sum",
        "property": "gb_hours",
        "window": "1h",
        "allowed_lateness": "3h",
    },
]

_STANDARD_API_V1: list[dict[str, Any]] = [
    {"up_to": 1000, "unit_price": "0.02"},
    {"up_to": 10000, "unit_price": "0.015"},
    {"up_to": None, "unit_price": "0.01"},
]
_STANDARD_API_V2: list[dict[str, Any]] = [
    {"up_to": 1000, "unit_price": "0.02"},
    {"up_to": 10000, "unit_price": "0.014"},
    {"up_to": None, "unit_price": "0.009"},
]


def _standard_charges(api_tiers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"code": "api", "meter": "api_calls", "model": "graduated", "tiers": api_tiers},
        {"code": "platform", "model": "flat", "amount": "49.00"},
        {
            "code": "tokens",
            "meter": "tokens",
            "model": "package",
            "package_size": 1000,
            "package_price": "0.50",
        },
        {"code": "storage", "meter": "storage_gb_hours", "model": "per_unit", "unit_price": "0.02"},
    ]


def _japan_charges(api_unit_price: str) -> list[dict[str, Any]]:
    return [
        {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": api_unit_price},
        {"code": "platform", "model": "flat", "amount": "5000"},
        {
            "code": "tokens",
            "meter": "tokens",
            "model": "package",
            "package_size": 1000,
            "package_price": "60",
        },
    ]


# A book that began in December, for the anniversary customer (its first period starts
# December 20th): usage in arrears, and a platform fee billed in advance.
ANNIVERSARY_START = "2023-12-20T00:00:00Z"
STARTER: dict[str, Any] = {
    "code": "starter",
    "currency": "USD",
    "versions": [
        {
            "version": "v1",
            "effective_from": "2023-12-01T00:00:00Z",
            "charges": [
                {"code": "api", "meter": "api_calls", "model": "per_unit", "unit_price": "0.03"},
                {"code": "platform", "model": "flat", "amount": "19.00", "in_advance": True},
                {
                    "code": "tokens",
                    "meter": "tokens",
                    "model": "package",
                    "package_size": 1000,
                    "package_price": "0.60",
                },
            ],
        }
    ],
}


PRICE_BOOKS: list[dict[str, Any]] = [
    {
        "code": "standard",
        "currency": "USD",
        "rounding": "half_up",
        "versions": [
            {
                "version": "v1",
                "effective_from": MONTH_START,
                "minimum_spend": "100.00",
                "charges": _standard_charges(_STANDARD_API_V1),
            },
            {
                "version": "v2",
                "effective_from": MID_MONTH,
                "minimum_spend": "100.00",
                "charges": _standard_charges(_STANDARD_API_V2),
            },
        ],
    },
    {
        "code": "growth-eur",
        "currency": "EUR",
        "rounding": "half_even",
        "versions": [
            {
                "version": "v1",
                "effective_from": EARLY_START,
                "maximum_spend": "5.00",  # a usage cap: the invoice shows a negative line
                "charges": [
                    {
                        "code": "api",
                        "meter": "api_calls",
                        "model": "volume",
                        "tiers": [
                            {"up_to": 10000, "unit_price": "0.012"},
                            {"up_to": 100000, "unit_price": "0.010"},
                            {"up_to": None, "unit_price": "0.008", "flat_fee": "25.00"},
                        ],
                    },
                    {"code": "platform", "model": "flat", "amount": "39.00"},
                    {
                        "code": "tokens",
                        "meter": "tokens",
                        "model": "per_unit",
                        "unit_price": "0.0004",
                    },
                ],
            }
        ],
    },
    {
        "code": "japan",
        "currency": "JPY",
        "versions": [
            {"version": "v1", "effective_from": EARLY_START, "charges": _japan_charges("2")}
        ],
    },
    STARTER,
]


# Customer indexes with a special subscription (both USD, neither with a coupon or credit):
PROGRESSIVE_INDEX = 6  # progressive billing: an interim invoice once usage reaches 10.00
PROGRESSIVE_THRESHOLD = "10.00"
ANNIVERSARY_INDEX = 8  # anniversary periods from December 20th (labels are start dates)

# Recorded after January was invoiced: the contract price was 1.5 JPY per call.
JAPAN_FIX: dict[str, Any] = {
    "price_books": [
        {
            **PRICE_BOOKS[2],
            "versions": [
                PRICE_BOOKS[2]["versions"][0],
                {
                    "version": "v1b",
                    "effective_from": EARLY_START,
                    "supersedes": "v1",
                    "reason": "API unit price entered as 2 JPY; the signed contract says 1.5 JPY",
                    "retroactive": True,
                    "charges": _japan_charges("1.5"),
                },
            ],
        }
    ]
}


def customer(i: int, cid: str) -> dict[str, Any]:
    """Every tenth customer is in Berlin (EUR), every tenth in Tokyo (JPY), the rest USD."""
    sub = {"start": MONTH_START}
    if i % 10 == 3:
        return {
            "id": cid,
            "name": f"Kunde {i:04d} GmbH",
            "currency": "EUR",
            "timezone": "Europe/Berlin",
            "tax_rate": "0.19",
            "billing_address": [f"Musterstraße {i % 90 + 1}", "80331 München", "Germany"],
            "payment_terms": "net 14",
            "subscriptions": [
                {"price_book": "growth-eur", "start": LOCAL_MONTH_START["Europe/Berlin"]}
            ],
        }
    if i % 10 == 7:
        return {
            "id": cid,
            "name": f"Kabushiki Kaisha {i:04d}",
            "currency": "JPY",
            "timezone": "Asia/Tokyo",
            "tax_rate": "0.10",
            "billing_address": [
                f"{i % 9 + 1}-1-1 Marunouchi",
                "Chiyoda-ku, Tokyo 100-0005",
                "Japan",
            ],
            "subscriptions": [{"price_book": "japan", "start": LOCAL_MONTH_START["Asia/Tokyo"]}],
        }
    out: dict[str, Any] = {
        "id": cid,
        "name": f"Customer {i:04d} Inc.",
        "currency": "USD",
        "timezone": "America/New_York" if i % 4 == 1 else "UTC",
        "tax_rate": "0.0825" if i % 3 == 0 else "0",
        "billing_address": [f"{100 + i} Market Street", "San Francisco, CA 94105", "USA"],
        "subscriptions": [{"price_book": "standard", **sub}],
    }
    if i == PROGRESSIVE_INDEX:
        out["subscriptions"] = [
            {"price_book": "standard", **sub, "threshold": PROGRESSIVE_THRESHOLD}
        ]
    if i == ANNIVERSARY_INDEX:
        out["subscriptions"] = [
            {"price_book": "starter", "start": ANNIVERSARY_START, "anchor": "subscription"}
        ]
    if i % 5 == 0:
        out["credits"] = [
            {"id": f"promo-{cid}", "amount": "50.00", "granted_at": "2023-12-15T00:00:00Z"}
        ]
    if i % 10 == 2:  # a launch coupon: 10% off usage for three billing periods
        coupon = {"code": "LAUNCH10", "percent_off": "10", "duration": "repeating", "periods": 3}
        out["coupons"] = [{**coupon, "start": MONTH_START}]
    return out


def catalog(workload: Workload) -> dict[str, Any]:
    """The whole catalog; the workload's last customer is deliberately left out."""
    ids = workload.customer_ids()[:-1]
    return {
        "seller": SELLER,
        "meters": METERS,
        "price_books": PRICE_BOOKS,
        "customers": [customer(i, cid) for i, cid in enumerate(ids)],
    }
