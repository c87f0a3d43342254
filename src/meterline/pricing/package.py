"""package: ceil(quantity / package_size) x package_price, per segment (DESIGN §5).

1,001 units in packages of 1,000 at 0.50 = 2 packages = 1.00: a started
package is paid in full. Applied per segment by design, so a period split by a
price change can cost one package more than the same usage unsplit.
"""

from __future__ import annotations

from decimal import Decimal

from meterline.domain.decimals import fmt
from meterline.domain.money import Currency
from meterline.pricing._exact import ceil_div, mul
from meterline.pricing.charges import Package
from meterline.pricing.explanation import Priced, grouped, price_text


def price_package(charge: Package, quantity: Decimal, currency: Currency) -> Priced:
    if quantity < 0:
        raise ValueError("package pricing needs a non-negative quantity")
    packages = ceil_div(quantity, charge.package_size)
    size, price = grouped(charge.package_size), price_text(charge.package_price, currency)
    return Priced(
        amount=mul(packages, charge.package_price),
        terms=(f"ceil({grouped(quantity)} / {size}) x {price}",),
        pricing=(
            ("package_size", fmt(charge.package_size)),
            ("package_price", fmt(charge.package_price)),
            ("packages", fmt(packages)),
        ),
    )
