"""package: ceil(quantity / package_size) x package_price, per segment (DESIGN §5).

1,001 units in packages of 1,000 at 0.50 = 2 packages = 1.00: a started
package is paid in full. Applied per segment by design, so a period split by a
price change can cost one package more than the same usage unsplit.

With `free_units`, the first N units of the period are free (their position
carries across segments) and packages count the rest: Lago's example, 201
units with 100 free in packages of 100 at 5.00 = ceil(101 / 100) x 5.00 = 10.00.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.money import Currency
from meterline.pricing._exact import ceil_div, fmt, mul, sub
from meterline.pricing.charges import ZERO, Package
from meterline.pricing.explanation import Priced, grouped, price_text
from meterline.pricing.free_units import billable


def price_package(
    charge: Package, quantity: Decimal, currency: Currency, position: Decimal = ZERO
) -> Priced:
    if quantity < 0:
        raise ValueError("package pricing needs a non-negative quantity")
    billed = billable(quantity, position, charge.free_units) if charge.free_units else quantity
    packages = ceil_div(billed, charge.package_size)
    size, price = grouped(charge.package_size), price_text(charge.package_price, currency)
    term = f"ceil({grouped(billed)} / {size}) x {price}"
    if billed != quantity:
        term += f" ({grouped(sub(quantity, billed))} free)"
    pricing: tuple[tuple[str, str], ...] = (
        ("package_size", fmt(charge.package_size)),
        ("package_price", fmt(charge.package_price)),
        ("packages", fmt(packages)),
    )
    if charge.free_units:
        pricing += (("free_units", fmt(charge.free_units)), ("billed_units", fmt(billed)))
    return Priced(amount=mul(packages, charge.package_price), terms=(term,), pricing=pricing)
