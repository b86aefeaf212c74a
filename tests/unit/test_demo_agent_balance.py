"""``make demo``'s line for the Deriv agent balance's reconciliation (``GET /admin/ledger/deriv-agent``)."""

from __future__ import annotations

from penpay.demo import agent_balance_verdict


def test_an_explained_balance_says_so() -> None:
    assert agent_balance_verdict({"ok": True, "drift_cents": 0, "deriv_cents": 100}) == "explained"


def test_a_drift_is_shown_in_dollars_with_its_sign_and_the_range() -> None:
    above = agent_balance_verdict(
        {
            "ok": False,
            "drift_cents": 260,
            "currency": "USD",
            "deriv_cents": 740,
            "lowest_cents": 480,
            "highest_cents": 480,
        }
    )
    assert above.startswith("DRIFT of +2.60 USD (Deriv 740 cents, the ledger explains 480..480)")
    assert "PENPAY_SANDBOX_STATE_DIR" in above
    assert agent_balance_verdict({"ok": False, "drift_cents": -5}).startswith("DRIFT of -0.05 USD")


def test_an_answer_that_is_not_a_reconciliation_is_shown_as_it_came() -> None:
    assert agent_balance_verdict({"type": "about:blank", "status": 503}) == '{"type": "about:blank", "status": 503}'
    assert agent_balance_verdict(None) == "null"
