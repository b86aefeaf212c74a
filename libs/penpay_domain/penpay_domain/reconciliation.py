"""PenPay's money held at a provider against the ledger: the Deriv payment-agent balance Deriv reports, against the
``deriv:agent`` account that says what it should be.

The ledger moves the account in two steps: a transfer is reserved (pending) when a transaction is created and posted
when the provider has executed it. At any moment some reserved transfers have executed at the provider and not yet
been posted (a credit on its way back from Deriv), and others have not executed at all (a deposit still waiting for
its M-Pesa payment). So the provider's balance is exact only on a quiet platform; in general it lies between

- the posted balance less every pending credit (all reserved payouts executed), and
- the posted balance plus every pending debit (all reserved pay-ins executed).

Outside that range money moved at the provider that the ledger does not know of (a transfer made twice, a top-up or
a fee not booked: ``penpay ledger fund``), or the ledger posted what the provider never executed. ``drift`` is how
far outside, in minor units (negative: the provider holds less than the ledger can explain).
"""

from __future__ import annotations

from dataclasses import dataclass

from penpay_domain.errors import CurrencyMismatch
from penpay_domain.ledger import Account
from penpay_domain.money import Currency, Money


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderBalanceCheck:
    account: str
    currency: Currency
    provider: int  # the provider's balance, minor units
    posted: int  # the account's posted balance (debit-normal), minor units
    credits_pending: int  # reserved payouts not yet posted
    debits_pending: int  # reserved pay-ins not yet posted

    @property
    def lowest(self) -> int:
        """The least the provider can hold if the ledger is right: every reserved payout executed."""
        return self.posted - self.credits_pending

    @property
    def highest(self) -> int:
        """The most the provider can hold if the ledger is right: every reserved pay-in executed."""
        return self.posted + self.debits_pending

    @property
    def drift(self) -> int:
        """How far the provider's balance lies outside ``lowest..highest`` (0 inside; negative below)."""
        if self.provider < self.lowest:
            return self.provider - self.lowest
        if self.provider > self.highest:
            return self.provider - self.highest
        return 0

    @property
    def ok(self) -> bool:
        return self.drift == 0

    @property
    def exact(self) -> bool:
        """Nothing reserved: the provider's balance must equal the posted balance."""
        return self.credits_pending == 0 and self.debits_pending == 0


def reconcile_provider_balance(account: Account, provider: Money) -> ProviderBalanceCheck:
    """``account`` (read from the ledger first) against ``provider``, the balance the provider reported after it."""
    if provider.currency is not account.currency:
        raise CurrencyMismatch(
            f"{account.code} is kept in {account.currency.value}, the provider reported {provider.currency.value}"
        )
    return ProviderBalanceCheck(
        account=account.code,
        currency=account.currency,
        provider=provider.minor,
        posted=account.debits_posted - account.credits_posted,
        credits_pending=account.credits_pending,
        debits_pending=account.debits_pending,
    )
