"""``penpay``: the operator's command line.

    penpay migrate [--revision REV] [--down]   bring the database to the schema (creating it if missing)
    penpay ledger check                        every ledger invariant; exit 1 if one fails
    penpay ledger balances                     the chart of accounts with balances
    penpay ledger fund ACCOUNT AMOUNT --ref R  owner's money into an asset account (e.g. deriv:agent 5000.00)
    penpay audit verify                        re-walk the audit hash chain; exit 1 and name the first bad row
    penpay token --sub USER [--role admin] [--ttl 3600]   mint an API token (sandbox only; refused in production)
    penpay token --sub load --count 2000                  one token per line for users load-1 ... load-2000
    penpay demo                                one deposit and one withdrawal through the running sandbox platform

Bad input exits 2 with one readable line; a failed check exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from penpay.adapters.db import schema
from penpay.bootstrap import database
from penpay.demo import DemoPlan, run_demo
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

    token = sub.add_parser("token", help="mint an API token with the configured key (sandbox only)")
    token.add_argument("--sub", required=True, help="the user id")
    token.add_argument("--role", default=None, help="e.g. admin")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument(
        "--count", type=int, default=1, help="tokens for COUNT users SUB-1 ... SUB-COUNT, one a line (load tests)"
    )

    defaults = DemoPlan()
    demo_cmd = sub.add_parser("demo", help="one deposit and one withdrawal through the running sandbox platform")
    demo_cmd.add_argument("--amount-kes", type=int, default=defaults.amount_kes, help="the deposit, whole KES")
    demo_cmd.add_argument("--amount-usd", default=defaults.amount_usd, help='the withdrawal, e.g. "5.00"')
    demo_cmd.add_argument("--msisdn", default=defaults.msisdn, help="the phone (see docs/sandbox.md)")
    demo_cmd.add_argument("--loginid", default=defaults.loginid, help="the Deriv account (see docs/sandbox.md)")
    demo_cmd.add_argument("--timeout", type=float, default=defaults.timeout_s, help="seconds per transaction")
    return parser


def mint_token(settings: Settings, *, sub: str, role: str | None = None, ttl_s: int = 3600) -> str:
    """A JWT for the configured algorithm, issuer and audience, with exp, nbf and iat (the API requires them)."""
    now = datetime.now(UTC)
    claims: dict[str, Any] = {
        "sub": sub,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "nbf": now,
        "exp": now + timedelta(seconds=ttl_s),
    }
    if role:
        claims["role"] = role
    if settings.jwt_algorithm.startswith("HS"):
        key = settings.jwt_secret.get_secret_value()
    elif settings.jwt_private_key is not None and settings.jwt_private_key.get_secret_value().strip():
        key = settings.jwt_private_key.get_secret_value()
    else:
        raise DomainError(f"minting {settings.jwt_algorithm} tokens needs PENPAY_JWT_PRIVATE_KEY")
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm)


MAX_TOKENS = 100_000


def _token(settings: Settings, sub: str, role: str | None, ttl: int, count: int = 1) -> int:
    if settings.is_production:
        raise DomainError("refusing to mint tokens in production (PENPAY_ENV=production)")
    if ttl <= 0:
        raise DomainError("--ttl must be a positive number of seconds")
    if not 1 <= count <= MAX_TOKENS:
        raise DomainError(f"--count must be between 1 and {MAX_TOKENS:,}")
    subjects = [sub] if count == 1 else [f"{sub}-{n}" for n in range(1, count + 1)]
    sys.stdout.write("".join(mint_token(settings, sub=s, role=role, ttl_s=ttl) + "\n" for s in subjects))
    return 0


async def _demo(settings: Settings, args: argparse.Namespace) -> int:
    plan = DemoPlan(
        msisdn=args.msisdn,
        loginid=args.loginid,
        amount_kes=args.amount_kes,
        amount_usd=args.amount_usd,
        timeout_s=args.timeout,
    )
    return await run_demo(settings, plan, mint=mint_token)


def _out(payload: object) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


async def _ledger_check(settings: Settings) -> int:
    async with database(settings) as db:
        result = await admin.check_ledger(lambda: db.uow(snapshot=True))
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
    if args.command == "token":
        return _token(settings, args.sub, args.role, args.ttl, args.count)
    if args.command == "demo":
        return asyncio.run(_demo(settings, args))
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
