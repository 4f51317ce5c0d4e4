"""UK VAT on a receipt: the supplier's details and the VAT a total includes. Pure."""

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from svc.env import Settings

# Exact far below half a penny for any rate with a few decimals, whatever the process-wide
# decimal context says.
_VAT = Context(prec=60, rounding=ROUND_HALF_UP)


def vat_included_pence(total_pence: int, rate_percent: Decimal) -> int:
    """The VAT a VAT-inclusive total contains: total × rate ÷ (100 + rate), half-up to
    the penny (HMRC lets a simplified invoice show it so)."""
    if total_pence < 0 or rate_percent < 0 or not rate_percent.is_finite():
        raise ValueError(f"no VAT of {total_pence} pence at {rate_percent}%")
    vat = _VAT.divide(
        _VAT.multiply(Decimal(total_pence), rate_percent), _VAT.add(Decimal(100), rate_percent)
    )
    return int(_VAT.quantize(vat, Decimal(1)))


@dataclass(frozen=True, slots=True)
class VatInvoice:
    """What makes a receipt a UK simplified VAT invoice: the supplier and its rate."""

    business_name: str
    business_address: str
    vat_number: str
    rate_percent: Decimal

    def included_pence(self, total_pence: int) -> int:
        return vat_included_pence(total_pence, self.rate_percent)

    @property
    def rate(self) -> str:
        """20, or 17.5: the rate as people write it."""
        return format(self.rate_percent.normalize(), "f")


def vat_invoice(settings: "Settings") -> VatInvoice | None:
    """The supplier's details for VAT receipts, when VAT_NUMBER, BUSINESS_NAME and
    BUSINESS_ADDRESS are set (the settings refuse one or two of them alone)."""
    if not (settings.VAT_NUMBER and settings.BUSINESS_NAME and settings.BUSINESS_ADDRESS):
        return None
    return VatInvoice(
        business_name=settings.BUSINESS_NAME,
        business_address=settings.BUSINESS_ADDRESS,
        vat_number=settings.VAT_NUMBER,
        rate_percent=settings.VAT_RATE,
    )
