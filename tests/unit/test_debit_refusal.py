"""What a user reads when Deriv refuses a withdrawal's debit: Deriv's InvalidToken means two different things."""

from __future__ import annotations

from penpay.service_layer.debiting import debit_refusal
from penpay_domain.providers import DerivTransferResult, Outcome

INVALID = "Your token has expired or is invalid."


def _refused(code: str, message: str, refused_by: str) -> DerivTransferResult:
    return DerivTransferResult(outcome=Outcome.REJECTED, error_code=code, message=message, refused_by=refused_by)


def test_a_refused_code_asks_for_a_new_code() -> None:
    code, reason = debit_refusal(_refused("InvalidToken", INVALID, "paymentagent_withdraw"))
    assert code == "verification_code_invalid"
    assert reason.startswith("Deriv refused the verification code: it is wrong, already used or expired.")
    assert reason.endswith(f"(Deriv: {INVALID})")


def test_a_refused_login_token_asks_to_link_the_account_again() -> None:
    for deriv_code, message in (("InvalidToken", "The token is invalid."), ("LoginidMismatch", "another account")):
        code, reason = debit_refusal(_refused(deriv_code, message, "authorize"))
        assert code == "deriv_token_invalid"
        assert "Link the Deriv account again" in reason and reason.endswith(f"(Deriv: {message})")


def test_any_other_refusal_keeps_derivs_code_and_words() -> None:
    refusal = _refused("PaymentAgentWithdrawError", "Your account balance is insufficient.", "paymentagent_withdraw")
    assert debit_refusal(refusal) == ("PaymentAgentWithdrawError", "Your account balance is insufficient.")
    assert debit_refusal(DerivTransferResult(outcome=Outcome.REJECTED)) == (
        "deriv_rejected",
        "Deriv refused the withdrawal",
    )
    # a gateway from before refused_by: Deriv's own code and words, as before
    assert debit_refusal(_refused("InvalidToken", INVALID, "")) == ("InvalidToken", INVALID)
