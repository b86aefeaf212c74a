"""Linking a user's Deriv account, and asking Deriv to e-mail a withdrawal verification code.

The user's plain token goes to the gateway once (``LinkAccount`` validates it with Deriv and answers with its
Fernet ciphertext); only the ciphertext is stored. Neither value is ever logged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from penpay.service_layer.withdrawals import AccountNotLinked
from penpay_domain.errors import DomainError
from penpay_domain.ids import DerivLoginId, UserId, parse_deriv_loginid
from penpay_domain.ports import Clock, DerivGateway, LinkedAccount, UnitOfWork
from penpay_domain.providers import Outcome


class DerivUnavailable(DomainError):
    code = "deriv_unavailable"


class DerivRejected(DomainError):
    code = "deriv_rejected"


@dataclass(frozen=True, slots=True)
class Linked:
    loginid: DerivLoginId
    currency: str
    email: str


async def link_account(
    uow_factory: Callable[[], UnitOfWork], gateway: DerivGateway, clock: Clock, *, user_id: UserId, token: str
) -> Linked:
    account, ciphertext = await gateway.link_account(token=token)
    loginid = parse_deriv_loginid(account.loginid)
    async with uow_factory() as uow:
        await uow.linked_accounts.upsert(
            LinkedAccount(
                user_id=user_id,
                loginid=loginid,
                currency=account.currency,
                token_ciphertext=ciphertext,
                linked_at=clock.now(),
                email=account.email,
            )
        )
        await uow.audit.append(
            actor=f"user:{user_id}",
            action="deriv.account_linked",
            subject=loginid,
            payload={"user_id": user_id, "currency": account.currency},
            now=uow.now,
        )
        await uow.commit()
    return Linked(loginid, account.currency, account.email)


async def request_withdrawal_code(
    uow_factory: Callable[[], UnitOfWork], gateway: DerivGateway, *, user_id: UserId, loginid: DerivLoginId
) -> None:
    async with uow_factory() as uow:
        linked = await uow.linked_accounts.get(user_id, loginid)
    if linked is None:
        raise AccountNotLinked(f"Deriv account {loginid} is not linked to you; link it with POST /deriv/link first")
    outcome = await gateway.request_withdrawal_code(loginid=loginid, token_ciphertext=linked.token_ciphertext)
    if outcome is Outcome.REJECTED:
        raise DerivRejected(f"Deriv refused to send a verification code to the owner of {loginid}")
    if outcome is not Outcome.DONE:
        raise DerivUnavailable("Deriv could not be asked for a verification code right now; please try again")
