"""The Deriv agent balance against the ledger: exact on a quiet platform, a range while transfers are reserved, and
drift measured from the range's nearer end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from penpay_domain import ledger
from penpay_domain.errors import CurrencyMismatch
from penpay_domain.money import Currency, Money
from penpay_domain.reconciliation import reconcile_provider_balance


def _agent(
    *, debits_posted: int, credits_posted: int = 0, credits_pending: int = 0, debits_pending: int = 0
) -> ledger.Account:
    return ledger.Account(
        code=ledger.DERIV_AGENT.code,
        currency=Currency.USD,
        rule=ledger.DERIV_AGENT.rule,
        debits_posted=debits_posted,
        credits_posted=credits_posted,
        credits_pending=credits_pending,
        debits_pending=debits_pending,
    )


def test_on_a_quiet_platform_the_balances_must_be_equal() -> None:
    agent = _agent(debits_posted=100_000_00, credits_posted=2_500)
    r = reconcile_provider_balance(agent, Money.usd_cents(100_000_00 - 2_500))
    assert r.exact and r.ok and r.drift == 0
    assert r.posted == r.lowest == r.highest == 100_000_00 - 2_500

    short = reconcile_provider_balance(agent, Money.usd_cents(100_000_00 - 2_500 - 1))
    assert not short.ok and short.drift == -1  # Deriv holds a cent less than the ledger explains
    extra = reconcile_provider_balance(agent, Money.usd_cents(100_000_00 - 2_500 + 700))
    assert not extra.ok and extra.drift == 700  # a top-up not booked, say


def test_pending_transfers_widen_the_range_each_way() -> None:
    agent = _agent(debits_posted=10_000, credits_pending=300, debits_pending=50)
    r = reconcile_provider_balance(agent, Money.usd_cents(10_000))
    assert (r.lowest, r.highest) == (9_700, 10_050)
    for deriv in (9_700, 9_850, 10_000, 10_050):  # any subset of the reserved transfers executed
        assert reconcile_provider_balance(agent, Money.usd_cents(deriv)).ok
    assert reconcile_provider_balance(agent, Money.usd_cents(9_699)).drift == -1
    assert reconcile_provider_balance(agent, Money.usd_cents(10_051)).drift == 1
    assert not reconcile_provider_balance(agent, Money.usd_cents(10_000)).exact


def test_a_balance_in_another_currency_is_refused() -> None:
    with pytest.raises(CurrencyMismatch):
        reconcile_provider_balance(_agent(debits_posted=1), Money.kes(1))


@given(
    posted=st.integers(0, 10**12),
    credits_pending=st.integers(0, 10**9),
    debits_pending=st.integers(0, 10**9),
    deriv=st.integers(-(10**12), 2 * 10**12),
)
def test_drift_is_zero_exactly_inside_the_range_and_leads_back_to_it(
    posted: int, credits_pending: int, debits_pending: int, deriv: int
) -> None:
    r = reconcile_provider_balance(
        _agent(debits_posted=posted, credits_pending=credits_pending, debits_pending=debits_pending),
        Money.usd_cents(deriv),
    )
    assert r.ok == (r.lowest <= deriv <= r.highest)
    assert r.lowest <= deriv - r.drift <= r.highest  # the drift is the distance to the nearer end
    assert (r.drift < 0) == (deriv < r.lowest) and (r.drift > 0) == (deriv > r.highest)
