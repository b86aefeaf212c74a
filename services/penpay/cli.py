"""``penpay``: the operator's command line.

    penpay migrate [--revision REV] [--down]   bring the database to the schema (creating it if missing)
    penpay ledger check                        every ledger invariant; exit 1 if one fails
    penpay ledger balances                     the chart of accounts with balances
    penpay ledger fund ACCOUNT AMOUNT --ref R  owner's money into an asset account (e.g. deriv:agent 5000.00)
    penpay audit verify                        re-walk the audit hash chain; exit 1 and name the first bad row

Bad input exits 2 with one readable line; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from penpay.adapters.db import schema
from penpay.bootstrap import database
from penpay.logging import configure_logging
from penpay.service_layer import admin
from penpay.settings import Settings
from penpay_domain import ledger
from penpay_domain.errors import DomainError
from penpay_domain.money import Money


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="penpay", description="PenPay operator commands")
    sub = parser.add_subparsers(dest="command", required=True)

    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--revision", default=None, help="target revision (default: head, or base with --down)")
    migrate.add_argument("--down", action="store_true", help="downgrade instead of upgrade")

    led = sub.add_parser("ledger", help="ledger operations").add_subparsers(dest="action", required=True)
    led.add_parser("check", help="check every ledger invariant")
    led.add_parser("balances", help="print the chart of accounts with balances")
    fund = led.add_parser("fund", help="owner's money into an asset account")
    fund.add_argument("account", choices=[spec.code for spec in ledger.FUNDABLE])
    fund.add_argument("amount", help="decimal amount in the account's currency, e.g. 5000.00")
    fund.add_argument("--ref", required=True, help="a unique reference: funding twice with one ref posts once")

    audit = sub.add_parser("audit", help="audit log").add_subparsers(dest="action", required=True)
    audit.add_parser("verify", help="verify the hash chain")
    return parser


def _out(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


async def _ledger_check(settings: Settings) -> int:
    async with database(settings) as db:
        result = await admin.check_ledger(db.uow)
    _out({"ok": result.ok, "currencies": result.currencies, "problems": result.problems})
    return 0 if result.ok else 1


async def _ledger_balances(settings: Settings) -> int:
    async with database(settings) as db, db.uow() as uow:
        accounts = await uow.ledger.accounts()
    _out(
        [
            {
                "account": a.code,
                "currency": a.currency.value,
                "balance": a.balance.to_str(),
                "available": a.available.to_str(),
                "debits_pending": a.debits_pending,
                "credits_pending": a.credits_pending,
            }
            for a in accounts
        ]
    )
    return 0


async def _ledger_fund(settings: Settings, account: str, amount: str, ref: str) -> int:
    spec = ledger.CHART_BY_CODE[account]
    money = Money.parse(amount, spec.currency)
    if not money.is_positive:
        raise DomainError("the amount must be positive")
    async with database(settings) as db, db.uow(actor="cli") as uow:
        applied = await uow.ledger.apply(ledger.funding(f"fund:{ref}", spec, money))
        if applied:
            await uow.audit.append(
                actor="cli",
                action="ledger.funded",
                subject=account,
                payload={"amount": money.to_str(), "ref": ref},
                now=uow.now,
            )
        await uow.commit()
    _out({"account": account, "amount": money.to_str(), "currency": spec.currency.value, "posted": applied})
    return 0


async def _audit_verify(settings: Settings) -> int:
    async with database(settings) as db:
        report = await admin.verify_audit(db.uow)
    _out({"ok": report.ok, "rows": report.rows, "first_bad_row": report.first_bad_row, "reason": report.reason})
    return 0 if report.ok else 1


def run(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    configure_logging("cli", settings.log_level)
    if args.command == "migrate":
        if args.down:
            schema.downgrade(settings.database_url, args.revision or "base")
        else:
            schema.upgrade(settings.database_url, args.revision or "head")
        return 0
    if args.command == "ledger" and args.action == "check":
        return asyncio.run(_ledger_check(settings))
    if args.command == "ledger" and args.action == "balances":
        return asyncio.run(_ledger_balances(settings))
    if args.command == "ledger" and args.action == "fund":
        return asyncio.run(_ledger_fund(settings, args.account, args.amount, args.ref))
    return asyncio.run(_audit_verify(settings))


def main(argv: Sequence[str] | None = None) -> None:
    try:
        code = run(argv)
    except DomainError as exc:
        sys.stderr.write(f"penpay: {exc.message}\n")
        code = 2
    except (OSError, ConnectionError) as exc:
        sys.stderr.write(f"penpay: cannot reach a service: {exc}\n")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
