"""The double-entry ledger: postings, pending -> posted | voided on four counters, balance rules, trial balance."""

from __future__ import annotations

import pytest

from penpay_domain import ledger
from penpay_domain.errors import (
    CurrencyMismatch,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    PendingTransferResolved,
    UnbalancedTransfer,
)
from penpay_domain.ledger import (
    CLEARING_KES,
    DERIV_AGENT,
    EQUITY_USD,
    FX_KES,
    FX_USD,
    MPESA_COLLECTIONS,
    MPESA_DISBURSEMENTS,
    Account,
    BalanceRule,
    Posting,
    Transfer,
    TransferKind,
)
from penpay_domain.money import Currency, Money

KES, USD = Money.kes, Money.usd_cents


def chart() -> dict[str, Account]:
    return {spec.code: Account.open(spec) for spec in ledger.CHART}


def applied(accounts: dict[str, Account], *transfers: Transfer) -> dict[str, Account]:
    """Apply transfers in order (resolving pendings among them) and return the whole chart."""
    out = dict(accounts)
    by_id: dict[str, Transfer] = {}
    for transfer in transfers:
        pending = by_id.get(transfer.pending_id) if transfer.pending_id else None
        out.update(ledger.apply(out, transfer, pending))
        by_id[transfer.id] = transfer
    return out


def pay_from_agent(transfer_id: str, cents: int) -> Transfer:
    """A deposit's USD leg: the agent balance pays the customer (credits the asset)."""
    return ledger.pending(transfer_id, Posting(FX_USD.code, DERIV_AGENT.code, USD(cents)))


def agent_funded_with(cents: int) -> dict[str, Account]:
    return applied(chart(), ledger.funding("fund", DERIV_AGENT, USD(cents)))


class TestChartOfAccounts:
    def test_account_codes_are_unique_and_indexed(self) -> None:
        assert len(ledger.CHART_BY_CODE) == len(ledger.CHART)

    def test_the_money_paying_assets_may_never_go_below_zero(self) -> None:
        assert DERIV_AGENT.rule is BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS
        assert MPESA_DISBURSEMENTS.rule is BalanceRule.CREDITS_MUST_NOT_EXCEED_DEBITS

    def test_what_penpay_owes_customers_is_a_liability_that_cannot_be_overpaid(self) -> None:
        assert CLEARING_KES.rule is BalanceRule.DEBITS_MUST_NOT_EXCEED_CREDITS

    def test_every_currency_has_an_equity_account_to_fund_from(self) -> None:
        assert {s.currency for s in ledger.CHART if s.code.startswith("equity:")} == set(Currency)

    def test_a_new_account_has_zero_counters(self) -> None:
        account = Account.open(DERIV_AGENT)
        assert (account.debits_pending, account.debits_posted, account.credits_pending, account.credits_posted) == (
            0,
            0,
            0,
            0,
        )
        assert account.balance == account.available == USD(0)


class TestPostingsAndTransfers:
    def test_a_posting_cannot_debit_and_credit_the_same_account(self) -> None:
        with pytest.raises(UnbalancedTransfer, match="same account"):
            Posting(FX_KES.code, FX_KES.code, KES(1))

    @pytest.mark.parametrize("amount", [0, -1])
    def test_a_posting_moves_a_positive_amount(self, amount: int) -> None:
        with pytest.raises(UnbalancedTransfer, match="positive"):
            Posting(MPESA_COLLECTIONS.code, FX_KES.code, KES(amount))

    def test_postings_balance_per_currency_by_construction(self) -> None:
        transfer = ledger.posted(
            "t1",
            Posting(MPESA_COLLECTIONS.code, FX_KES.code, KES(1000)),
            Posting(FX_USD.code, DERIV_AGENT.code, USD(760)),
        )
        assert transfer.sums() == {Currency.KES: (1000, 1000), Currency.USD: (760, 760)}
        assert ledger.balanced(transfer.postings)

    def test_a_transfer_needs_a_posting(self) -> None:
        with pytest.raises(UnbalancedTransfer, match="at least one posting"):
            ledger.posted("t1")

    @pytest.mark.parametrize("transfer_id", ["", "x" * 65])
    def test_a_transfer_id_has_1_to_64_characters(self, transfer_id: str) -> None:
        with pytest.raises(InvalidInput, match="1 to 64"):
            ledger.posted(transfer_id, Posting(MPESA_COLLECTIONS.code, FX_KES.code, KES(1)))

    def test_only_post_and_void_reference_a_pending_transfer(self) -> None:
        posting = Posting(MPESA_COLLECTIONS.code, FX_KES.code, KES(1))
        with pytest.raises(InvalidInput, match="reference a pending"):
            Transfer(id="t1", kind=TransferKind.POSTED, postings=(posting,), pending_id="t0")
        with pytest.raises(InvalidInput, match="reference a pending"):
            Transfer(id="t1", kind=TransferKind.POST_PENDING, postings=())

    def test_resolutions_have_deterministic_ids_so_a_repeat_cannot_apply_twice(self) -> None:
        assert ledger.post_pending("txn:usd").id == "txn:usd:post"
        assert ledger.void_pending("txn:usd").id == "txn:usd:void"

    def test_funding_credits_the_owners_equity(self) -> None:
        (posting,) = ledger.funding("f1", DERIV_AGENT, USD(500)).postings
        assert posting == Posting(DERIV_AGENT.code, EQUITY_USD.code, USD(500))


class TestPendingPostVoid:
    def test_a_pending_transfer_moves_only_the_pending_counters(self) -> None:
        accounts = applied(agent_funded_with(1000), pay_from_agent("p1", 600))
        agent = accounts[DERIV_AGENT.code]
        assert (agent.debits_posted, agent.credits_posted, agent.credits_pending) == (1000, 0, 600)
        assert agent.balance == USD(1000)  # nothing has left yet...
        assert agent.available == USD(400)  # ...but it is reserved
        assert accounts[FX_USD.code].debits_pending == 600

    def test_posting_a_pending_transfer_moves_pending_to_posted(self) -> None:
        pending = pay_from_agent("p1", 600)
        accounts = applied(agent_funded_with(1000), pending, ledger.post_pending("p1"))
        agent = accounts[DERIV_AGENT.code]
        assert (agent.credits_pending, agent.credits_posted) == (0, 600)
        assert agent.balance == agent.available == USD(400)
        assert (accounts[FX_USD.code].debits_pending, accounts[FX_USD.code].debits_posted) == (0, 600)

    def test_voiding_a_pending_transfer_releases_the_reservation(self) -> None:
        accounts = applied(agent_funded_with(1000), pay_from_agent("p1", 600), ledger.void_pending("p1"))
        agent = accounts[DERIV_AGENT.code]
        assert (agent.credits_pending, agent.credits_posted) == (0, 0)
        assert agent.balance == agent.available == USD(1000)
        assert accounts[FX_USD.code].debits_pending == 0

    @pytest.mark.parametrize("resolve", [ledger.post_pending, ledger.void_pending])
    def test_resolving_a_pending_transfer_twice_is_refused(self, resolve: object) -> None:
        pending = pay_from_agent("p1", 600)
        accounts = applied(agent_funded_with(1000), pending)
        with pytest.raises(PendingTransferResolved):
            ledger.apply(accounts, resolve("p1"), pending, already_resolved=True)  # type: ignore[operator]

    def test_resolving_needs_the_pending_transfer_it_names(self) -> None:
        accounts = agent_funded_with(1000)
        with pytest.raises(NotFound, match="p1"):
            ledger.apply(accounts, ledger.post_pending("p1"), None)
        with pytest.raises(NotFound, match="p1"):
            ledger.apply(accounts, ledger.post_pending("p1"), pay_from_agent("p2", 1))

    def test_only_a_pending_transfer_can_be_resolved(self) -> None:
        single_phase = ledger.posted("p1", Posting(FX_USD.code, DERIV_AGENT.code, USD(1)))
        with pytest.raises(InvalidInput, match="not pending"):
            ledger.apply(agent_funded_with(1000), ledger.void_pending("p1"), single_phase)

    def test_apply_is_pure_and_returns_only_the_touched_accounts(self) -> None:
        before = agent_funded_with(1000)
        snapshot = dict(before)
        result = ledger.apply(before, pay_from_agent("p1", 600))
        assert set(result) == {DERIV_AGENT.code, FX_USD.code}
        assert before == snapshot


class TestAccountsAndCurrencies:
    def test_an_unknown_account_is_not_found(self) -> None:
        with pytest.raises(NotFound, match="nowhere"):
            ledger.apply(chart(), ledger.posted("t1", Posting("nowhere", FX_KES.code, KES(1))))

    def test_a_posting_in_another_currency_than_its_account_is_refused(self) -> None:
        with pytest.raises(CurrencyMismatch, match="fx:KES is KES"):
            ledger.apply(chart(), ledger.posted("t1", Posting(FX_KES.code, FX_USD.code, USD(1))))


class TestBalanceRules:
    def test_an_unfunded_agent_balance_cannot_pay_anything(self) -> None:
        with pytest.raises(InsufficientFunds) as caught:
            ledger.apply(chart(), pay_from_agent("p1", 1))
        assert caught.value.details == {"account": DERIV_AGENT.code}
        assert caught.value.code == "insufficient_funds"

    def test_the_agent_balance_can_be_spent_exactly_to_zero(self) -> None:
        accounts = applied(agent_funded_with(1000), pay_from_agent("p1", 1000), ledger.post_pending("p1"))
        assert accounts[DERIV_AGENT.code].balance == USD(0)

    def test_pending_credits_count_as_spent(self) -> None:
        accounts = applied(agent_funded_with(1000), pay_from_agent("p1", 600))
        with pytest.raises(InsufficientFunds):
            ledger.apply(accounts, pay_from_agent("p2", 401))
        single_phase = ledger.posted("p3", Posting(FX_USD.code, DERIV_AGENT.code, USD(401)))
        with pytest.raises(InsufficientFunds):
            ledger.apply(accounts, single_phase)
        assert ledger.apply(accounts, pay_from_agent("p4", 400))[DERIV_AGENT.code].available == USD(0)

    def test_a_voided_reservation_can_be_spent_again(self) -> None:
        accounts = applied(agent_funded_with(1000), pay_from_agent("p1", 1000), ledger.void_pending("p1"))
        assert ledger.apply(accounts, pay_from_agent("p2", 1000))[DERIV_AGENT.code].available == USD(0)

    def test_money_can_always_flow_into_a_protected_asset(self) -> None:
        withdrawal_usd_leg = ledger.pending("w1", Posting(DERIV_AGENT.code, FX_USD.code, USD(10**9)))
        assert ledger.apply(chart(), withdrawal_usd_leg)[DERIV_AGENT.code].debits_pending == 10**9

    def test_pending_debits_do_not_make_an_asset_spendable(self) -> None:
        accounts = applied(chart(), ledger.pending("w1", Posting(DERIV_AGENT.code, FX_USD.code, USD(1000))))
        with pytest.raises(InsufficientFunds):
            ledger.apply(accounts, pay_from_agent("p1", 1))

    def test_a_liability_cannot_be_paid_out_beyond_what_is_owed(self) -> None:
        owed = ledger.posted("owed", Posting(FX_KES.code, CLEARING_KES.code, KES(100)))
        accounts = applied(chart(), owed)
        refund = ledger.posted("refund", Posting(CLEARING_KES.code, MPESA_COLLECTIONS.code, KES(101)))
        with pytest.raises(InsufficientFunds, match=CLEARING_KES.code):
            ledger.apply(accounts, refund)
        exact = ledger.posted("refund", Posting(CLEARING_KES.code, MPESA_COLLECTIONS.code, KES(100)))
        assert ledger.apply(accounts, exact)[CLEARING_KES.code].balance == KES(0)

    def test_a_pending_credit_to_a_liability_is_not_yet_owed(self) -> None:
        accounts = applied(chart(), ledger.pending("owed", Posting(FX_KES.code, CLEARING_KES.code, KES(100))))
        refund = ledger.pending("refund", Posting(CLEARING_KES.code, MPESA_COLLECTIONS.code, KES(1)))
        with pytest.raises(InsufficientFunds):
            ledger.apply(accounts, refund)

    def test_an_unconstrained_account_may_go_either_way(self) -> None:
        accounts = applied(chart(), ledger.posted("t1", Posting(FX_KES.code, MPESA_COLLECTIONS.code, KES(5))))
        assert accounts[MPESA_COLLECTIONS.code].balance == KES(-5)
        assert ledger.rule_violations(accounts.values()) == []


class TestTrialBalance:
    def test_an_empty_chart_balances_in_every_currency(self) -> None:
        balances = ledger.trial_balance(chart().values())
        assert set(balances) == set(Currency)
        assert all(tb.ok for tb in balances.values())

    def test_applied_transfers_keep_debits_equal_to_credits_per_currency(self) -> None:
        accounts = applied(
            agent_funded_with(1000), pay_from_agent("p1", 600), pay_from_agent("p2", 100), ledger.post_pending("p1")
        )
        usd = ledger.trial_balance(accounts.values())[Currency.USD]
        assert (usd.debits_posted, usd.credits_posted, usd.debits_pending, usd.credits_pending) == (
            1600,
            1600,
            100,
            100,
        )
        assert usd.ok

    def test_a_one_sided_entry_is_out_of_balance(self) -> None:
        lopsided = Account(FX_KES.code, Currency.KES, BalanceRule.NONE, debits_posted=5)
        assert not ledger.trial_balance([lopsided])[Currency.KES].ok
        pending_only = Account(FX_KES.code, Currency.KES, BalanceRule.NONE, credits_pending=5)
        assert not ledger.trial_balance([pending_only])[Currency.KES].ok

    def test_rule_violations_name_the_accounts(self) -> None:
        overdrawn = Account(DERIV_AGENT.code, Currency.USD, DERIV_AGENT.rule, credits_pending=1)
        overpaid = Account(CLEARING_KES.code, Currency.KES, CLEARING_KES.rule, debits_posted=1)
        fine = Account(FX_KES.code, Currency.KES, BalanceRule.NONE, credits_posted=1)
        assert ledger.rule_violations([overdrawn, overpaid, fine]) == [DERIV_AGENT.code, CLEARING_KES.code]
