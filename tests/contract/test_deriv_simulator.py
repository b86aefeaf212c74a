"""The Deriv simulator, driven by an independent raw ``websockets`` client (not PenPay's gateway).

Golden messages: each file in ``golden/deriv/`` holds a canonical request and the response Deriv documents for it
(reference/deriv.md and Deriv's published JSON Schemas). The simulator's answer must have exactly the golden keys at
every depth and the golden JSON types; varying values (ids, times, balances) are compared by type, the envelope and
result codes by value.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from penpay.sandbox.deriv import DerivSimulator, create_deriv_control_router
from tests.contract.deriv_fixtures import AGENT, AGENT_TOKEN, eventually, raw, sim, user_token

__all__ = ["raw", "sim"]  # fixtures used here

pytestmark = pytest.mark.contract


def _transfer(loginid: str, amount: str, description: str = "", **extra: object) -> dict[str, object]:
    return {
        "paymentagent_transfer": 1,
        "amount": Decimal(amount),
        "currency": "USD",
        "transfer_to": loginid,
        "description": description,
        **extra,
    }


class TestEnvelope:
    async def test_every_answer_echoes_the_request_msg_type_req_id_and_passthrough(self, raw):
        client = await raw()
        answer = await client.call({"ping": 1, "passthrough": {"trace": "abc"}})
        assert answer == {
            "ping": "pong",
            "echo_req": {"ping": 1, "passthrough": {"trace": "abc"}, "req_id": 1},
            "msg_type": "ping",
            "req_id": 1,
            "passthrough": {"trace": "abc"},
        }

    async def test_a_request_without_req_id_gets_an_answer_without_req_id(self, sim):
        async with connect(sim.url) as ws:
            await ws.send(json.dumps({"ping": 1}))
            answer = json.loads(await asyncio.wait_for(ws.recv(), 3))
        assert answer == {"ping": "pong", "echo_req": {"ping": 1}, "msg_type": "ping"}

    async def test_errors_carry_code_and_message_and_no_result_field(self, raw):
        client = await raw()
        answer = await client.call({"balance": 1})
        assert answer["error"] == {"code": "AuthorizationRequired", "message": "Please log in."}
        assert answer["msg_type"] == "balance"
        assert "balance" not in answer

    @pytest.mark.parametrize(
        "request_body",
        [{"balance": 1}, {"statement": 1}, _transfer("CR1234567", "1.00"), {"paymentagent_withdraw": 1}],
    )
    async def test_account_calls_before_authorize_need_authorization(self, raw, request_body):
        client = await raw()
        answer = await client.call(request_body)
        assert answer["error"]["code"] == "AuthorizationRequired"

    async def test_an_unknown_call_is_unrecognised(self, raw):
        client = await raw(AGENT_TOKEN)
        answer = await client.call({"teleport": 1})
        assert answer["error"]["code"] == "UnrecognisedRequest"
        assert answer["echo_req"] == {"teleport": 1, "req_id": 2}

    async def test_the_query_parameters_real_clients_send_are_accepted_and_other_paths_refused(self, sim, raw):
        client = await raw(query="?app_id=1089&l=EN&brand=deriv")
        assert (await client.call({"ping": 1}))["ping"] == "pong"
        with pytest.raises(InvalidStatus):
            await connect(sim.url.replace("/websockets/v3", "/other"), open_timeout=3)


class TestAuthorize:
    async def test_the_agent_token_authorises_the_agent_and_the_token_is_never_echoed(self, raw):
        client = await raw()
        answer = await client.call({"authorize": AGENT_TOKEN})
        account = answer["authorize"]
        assert account["loginid"] == AGENT
        assert account["currency"] == "USD"
        assert account["balance"] == Decimal("1000000.00")
        assert "payments" in account["scopes"]
        assert answer["echo_req"]["authorize"] == "<not shown>"
        assert AGENT_TOKEN not in json.dumps(answer, default=str)

    async def test_a_user_token_authorises_that_funded_login_id(self, raw):
        client = await raw()
        account = (await client.call({"authorize": user_token("CR1234567")}))["authorize"]
        assert account["loginid"] == "CR1234567"
        assert account["balance"] == Decimal("10000.00")
        assert account["email"] == "cr1234567@sandbox.deriv.test"

    async def test_an_unknown_token_is_invalid(self, raw):
        client = await raw()
        answer = await client.call({"authorize": "nope"})
        assert answer["error"]["code"] == "InvalidToken"
        assert "authorize" not in answer

    async def test_with_several_tokens_account_calls_must_name_the_loginid(self, raw):
        client = await raw()
        answer = await client.call({"authorize": AGENT_TOKEN, "tokens": [user_token("CR555")]})
        assert {a["loginid"] for a in answer["authorize"]["account_list"]} == {AGENT, "CR555"}
        assert (await client.call({"balance": 1}))["error"]["code"] == "InputValidationFailed"
        chosen = await client.call({"balance": 1, "loginid": "CR555"})
        assert chosen["balance"]["loginid"] == "CR555"


class TestConcurrency:
    async def test_many_in_flight_requests_are_answered_in_any_order_and_matched_by_req_id(self, sim, raw):
        sim.response_delay_ms = (0, 40)
        client = await raw(AGENT_TOKEN)
        sent = [await client.send({"ping": 1, "passthrough": {"n": n}}) for n in range(20)]
        answers = [await client.recv() for _ in sent]
        order = [a["req_id"] for a in answers]
        assert sorted(order) == sent
        assert order != sent  # interleaved: answered as each finished, not in request order
        assert all(a["passthrough"]["n"] == a["req_id"] - sent[0] for a in answers)


class TestBalanceSubscription:
    async def test_subscribe_streams_changes_made_from_another_socket(self, raw):
        watcher = await raw(user_token("CR7000001"))
        first = await watcher.call({"balance": 1, "subscribe": 1})
        sub_id = first["subscription"]["id"]
        assert first["balance"]["id"] == sub_id
        agent = await raw(AGENT_TOKEN)
        assert "error" not in await agent.call(_transfer("CR7000001", "25.00"))
        update = await watcher.recv()
        assert update["subscription"] == {"id": sub_id}
        assert update["msg_type"] == "balance"
        assert update["req_id"] == first["req_id"]
        assert update["balance"]["balance"] == Decimal("10025.00")

    async def test_forget_ends_the_subscription(self, sim, raw):
        client = await raw(AGENT_TOKEN)
        sub_id = (await client.call({"balance": 1, "subscribe": 1}))["subscription"]["id"]
        assert (await client.call({"forget": sub_id}))["forget"] == 1
        assert (await client.call({"forget": sub_id}))["forget"] == 0
        assert sim.subscription_count == 0

    async def test_forget_all_lists_what_it_ended(self, sim, raw):
        client = await raw(AGENT_TOKEN)
        sub_id = (await client.call({"balance": 1, "subscribe": 1}))["subscription"]["id"]
        assert (await client.call({"forget_all": "balance"}))["forget_all"] == [sub_id]

    async def test_a_second_subscription_on_one_socket_is_refused(self, raw):
        client = await raw(AGENT_TOKEN)
        await client.call({"balance": 1, "subscribe": 1})
        assert (await client.call({"balance": 1, "subscribe": 1}))["error"]["code"] == "AlreadySubscribed"

    async def test_subscriptions_are_dropped_with_the_socket(self, sim, raw):
        client = await raw(AGENT_TOKEN)
        await client.call({"balance": 1, "subscribe": 1})
        assert sim.subscription_count == 1
        await client.ws.close()
        await eventually(lambda: sim.subscription_count == 0 and sim.connection_count == 0)


class TestPaymentAgentTransfer:
    async def test_a_transfer_moves_cents_and_both_statements_show_it_with_the_description(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        answer = await agent.call(_transfer("CR1234567", "12.50", "PenPay T-1"))
        assert answer["paymentagent_transfer"] == 1
        assert answer["client_to_loginid"] == "CR1234567"
        assert isinstance(answer["transaction_id"], int)
        assert sim.balance_cents(AGENT) == 100_000_000 - 1250
        assert sim.balance_cents("CR1234567") == 1_000_000 + 1250

        rows = (await agent.call({"statement": 1, "description": 1}))["statement"]["transactions"]
        assert rows[0]["transaction_id"] == answer["transaction_id"]
        assert rows[0]["amount"] == Decimal("-12.50")
        assert rows[0]["balance_after"] == Decimal("999987.50")
        assert "PenPay T-1" in rows[0]["longcode"]
        client = await raw(user_token("CR1234567"))
        client_rows = (await client.call({"statement": 1, "description": 1}))["statement"]["transactions"]
        assert client_rows[0]["amount"] == Decimal("12.50")
        assert "PenPay T-1" in client_rows[0]["longcode"]

    async def test_amounts_are_two_decimal_json_numbers_on_the_wire(self, raw):
        agent = await raw(AGENT_TOKEN)
        await agent.send({"balance": 1})
        text = await agent.ws.recv()
        assert '"balance":1000000.00' in str(text)

    async def test_statement_leaves_out_longcode_unless_description_is_asked(self, raw):
        agent = await raw(AGENT_TOKEN)
        await agent.call(_transfer("CR1234567", "1.00", "PenPay T-2"))
        row = (await agent.call({"statement": 1}))["statement"]["transactions"][0]
        assert "longcode" not in row

    async def test_dry_run_validates_without_moving_money(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        answer = await agent.call(_transfer("CR1234567", "5.00", dry_run=1))
        assert answer["paymentagent_transfer"] == 2
        assert sim.statement(AGENT) == []

    async def test_more_than_two_decimals_is_invalid(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        answer = await agent.call(_transfer("CR1234567", "1.005"))
        assert answer["error"]["code"] == "InputValidationFailed"
        assert sim.statement(AGENT) == []

    async def test_only_a_payment_agent_may_transfer(self, raw):
        client = await raw(user_token("CR1234567"))
        answer = await client.call(_transfer("CR7654321", "1.00"))
        assert answer["error"]["code"] == "PaymentAgentTransferError"

    async def test_more_than_the_agent_balance_is_refused(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        answer = await agent.call(_transfer("CR1234567", "1000000.01"))
        assert answer["error"]["code"] == "PaymentAgentTransferError"
        assert sim.balance_cents(AGENT) == 100_000_000

    async def test_cr9000001_is_rejected_and_nothing_moves(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        answer = await agent.call(_transfer("CR9000001", "10.00"))
        assert answer["error"]["code"] == "PaymentAgentTransferError"
        assert "paymentagent_transfer" not in answer
        assert sim.statement(AGENT) == []

    async def test_cr9000002_executes_then_drops_the_socket_without_a_reply(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        await agent.send(_transfer("CR9000002", "10.00", "PenPay T-drop"))
        with pytest.raises(ConnectionClosed):
            await agent.recv()
        assert [e.amount_cents for e in sim.statement(AGENT)] == [-1000]
        assert "PenPay T-drop" in sim.statement(AGENT)[0].longcode
        assert sim.balance_cents("CR9000002") == 1_001_000


class TestPaymentAgentWithdraw:
    async def _code(self, sim, raw, loginid: str) -> str:
        client = await raw()
        answer = await client.call(
            {"verify_email": f"{loginid.lower()}@sandbox.deriv.test", "type": "paymentagent_withdraw"}
        )
        assert answer["verify_email"] == 1
        code = sim.verification_code(loginid)
        assert code is not None
        return code

    def _withdraw(self, amount: str, code: str, **extra: object) -> dict[str, object]:
        return {
            "paymentagent_withdraw": 1,
            "amount": Decimal(amount),
            "currency": "USD",
            "paymentagent_loginid": AGENT,
            "verification_code": code,
            "description": "PenPay W-1",
            **extra,
        }

    async def test_the_e_mailed_code_lets_the_client_pay_the_agent_once(self, sim, raw):
        code = await self._code(sim, raw, "CR2000001")
        client = await raw(user_token("CR2000001"))
        answer = await client.call(self._withdraw("20.00", code))
        assert answer["paymentagent_withdraw"] == 1
        assert answer["paymentagent_name"]
        assert sim.balance_cents("CR2000001") == 1_000_000 - 2000
        assert sim.balance_cents(AGENT) == 100_000_000 + 2000
        assert "PenPay W-1" in sim.statement(AGENT)[-1].longcode
        again = await client.call(self._withdraw("20.00", code))
        assert again["error"]["code"] == "InvalidToken"

    async def test_a_wrong_code_is_refused(self, sim, raw):
        await self._code(sim, raw, "CR2000002")
        client = await raw(user_token("CR2000002"))
        assert (await client.call(self._withdraw("1.00", "WRONG")))["error"]["code"] == "InvalidToken"

    async def test_verify_email_answers_1_even_for_unknown_addresses(self, raw):
        client = await raw()
        answer = await client.call({"verify_email": "someone@example.com", "type": "paymentagent_withdraw"})
        assert answer["verify_email"] == 1

    async def test_cr9000003_is_rejected(self, sim, raw):
        code = await self._code(sim, raw, "CR9000003")
        client = await raw(user_token("CR9000003"))
        answer = await client.call(self._withdraw("1.00", code))
        assert answer["error"]["code"] == "PaymentAgentWithdrawError"
        assert sim.balance_cents("CR9000003") == 1_000_000

    async def test_cr9000004_executes_then_drops_the_socket(self, sim, raw):
        code = await self._code(sim, raw, "CR9000004")
        client = await raw(user_token("CR9000004"))
        await client.send(self._withdraw("3.00", code))
        with pytest.raises(ConnectionClosed):
            await client.recv()
        assert sim.balance_cents("CR9000004") == 1_000_000 - 300
        assert sim.statement(AGENT)[-1].amount_cents == 300


class TestFaults:
    async def test_injected_rate_limit_refuses_the_next_calls_then_recovers(self, sim, raw):
        agent = await raw(AGENT_TOKEN)
        sim.inject_rate_limit(1)
        limited = await agent.call(_transfer("CR1234567", "1.00"))
        assert limited["error"]["code"] == "RateLimit"
        assert sim.statement(AGENT) == []
        assert (await agent.call(_transfer("CR1234567", "1.00")))["paymentagent_transfer"] == 1

    async def test_drop_connections_aborts_every_socket(self, sim, raw):
        client = await raw(AGENT_TOKEN)
        await sim.drop_connections()
        with pytest.raises(ConnectionClosed):
            await client.call({"ping": 1})


class TestControlApi:
    async def test_accounts_codes_and_faults_are_reachable_over_http(self, sim, raw):
        app = FastAPI()
        app.include_router(create_deriv_control_router(sim), prefix="/deriv")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sandbox") as http:
            funded = await http.post("/deriv/accounts/CR3000001/fund", json={"amount_cents": 150})
            assert funded.json()["balance"] == "10001.50"
            agent = await raw(AGENT_TOKEN)
            await agent.call(_transfer("CR3000001", "2.00", "PenPay C-1"))
            account = (await http.get(f"/deriv/accounts/{AGENT}")).json()
            assert account["balance_cents"] == 100_000_000 - 200
            assert "PenPay C-1" in account["statement"][0]["longcode"]
            assert (await http.get("/deriv/verification-codes/CR3000001")).status_code == 404
            await agent.call({"verify_email": "cr3000001@sandbox.deriv.test", "type": "paymentagent_withdraw"})
            code = (await http.get("/deriv/verification-codes/CR3000001")).json()["code"]
            assert code == sim.verification_code("CR3000001")
            assert (await http.post("/deriv/faults", json={"rate_limit": 1})).status_code == 200
            assert (await agent.call({"statement": 1}))["error"]["code"] == "RateLimit"
            assert (await http.get("/deriv/accounts/not-a-loginid")).status_code == 404


def test_the_simulator_url_is_the_deriv_path() -> None:
    simulator = DerivSimulator(agent_token=AGENT_TOKEN)
    assert simulator.url.endswith("/websockets/v3")


# ---------------------------------------------------------------------- golden messages
GOLDEN = Path(__file__).parent / "golden" / "deriv"
GOLDENS = {p.stem: json.loads(p.read_text(), parse_float=Decimal) for p in sorted(GOLDEN.glob("*.json"))}
# Values compared exactly (besides echo_req, compared with what was sent): the envelope and the result codes.
EXACT = ("msg_type", "req_id", "passthrough", "ping", "verify_email", "paymentagent_transfer", "paymentagent_withdraw")


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_mismatches(actual: object, golden: object, path: str = "$") -> list[str]:
    if json_type(actual) != json_type(golden):
        return [f"{path}: {json_type(actual)} where the golden file has {json_type(golden)}"]
    if isinstance(golden, dict) and isinstance(actual, dict):
        problems = [f"{path}.{k}: missing" for k in golden.keys() - actual.keys()]
        problems += [f"{path}.{k}: not in the golden file" for k in actual.keys() - golden.keys()]
        for key in golden.keys() & actual.keys():
            problems += shape_mismatches(actual[key], golden[key], f"{path}.{key}")
        return problems
    if isinstance(golden, list) and isinstance(actual, list) and golden:
        return [p for i, item in enumerate(actual) for p in shape_mismatches(item, golden[0], f"{path}[{i}]")]
    return []


def resolve(value: Any, sim: Any) -> Any:
    if isinstance(value, dict):
        return {k: resolve(v, sim) for k, v in value.items()}
    if isinstance(value, str) and value == "$AGENT_TOKEN":
        return AGENT_TOKEN
    if isinstance(value, str) and value.startswith("$USER_TOKEN:"):
        return user_token(value.split(":", 1)[1])
    if isinstance(value, str) and value.startswith("$CODE:"):
        return sim.verification_code(value.split(":", 1)[1])
    return value


@pytest.mark.parametrize("name", sorted(GOLDENS))
async def test_the_simulator_answers_with_the_golden_shape(name: str, sim, raw) -> None:
    """Canonical request/response pairs from reference/deriv.md and Deriv's published schemas (golden/deriv)."""
    golden = GOLDENS[name]
    client = await raw()
    for step in golden["setup"]:
        answer = await client.call(resolve(step, sim))
        assert "error" not in answer, answer
    if "rate_limit" in golden.get("fault", {}):
        sim.inject_rate_limit(golden["fault"]["rate_limit"])
    request = resolve(golden["request"], sim)
    response = await client.call(request)
    expected = golden["response"]

    assert shape_mismatches(response, expected) == []
    for key in EXACT:
        assert response.get(key) == expected.get(key), key
    if "error" in expected:
        assert response["error"]["code"] == expected["error"]["code"]
    echoed = dict(request)
    if "authorize" in echoed:
        echoed["authorize"] = "<not shown>"
    assert response["echo_req"] == echoed


def test_every_call_the_gateway_uses_has_a_golden_file() -> None:
    calls = {golden["response"]["msg_type"] for golden in GOLDENS.values()}
    assert calls >= {
        "ping",
        "authorize",
        "balance",
        "forget_all",
        "paymentagent_transfer",
        "paymentagent_withdraw",
        "verify_email",
        "statement",
        "error",
    }
