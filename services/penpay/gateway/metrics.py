"""The gateway's ``/metrics`` (Prometheus text, on its health port beside ``/healthz`` and ``/readyz``), collected
when scraped from what the process keeps anyway: whether it is the active instance (the lease held and the agent's
Deriv socket authorised), how often it connected to Deriv, the agent's last known balance, and, since the process
started, its gRPC calls by method and how they ended and its money answers (Deriv's) by kind and outcome.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from penpay.gateway.balances import BalanceTracker
from penpay.gateway.connection import DerivConnection
from penpay.gateway.lease import RedisLease
from penpay.gateway.service import DerivGatewayService


class GatewayMetrics(Collector):
    def __init__(
        self, *, service: DerivGatewayService, lease: RedisLease, connection: DerivConnection, balances: BalanceTracker
    ) -> None:
        self._service = service
        self._lease = lease
        self._connection = connection
        self._balances = balances
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self)

    async def render(self) -> bytes:
        return generate_latest(self._registry)

    def collect(self) -> Iterator[Metric]:
        yield GaugeMetricFamily(
            "penpay_gateway_active", "1 while this instance serves money calls", value=int(self._service.active)
        )
        yield GaugeMetricFamily(
            "penpay_gateway_lease_held", "1 while this instance holds the Redis lease", value=int(self._lease.is_held())
        )
        yield GaugeMetricFamily(
            "penpay_gateway_deriv_ready",
            "1 while the agent's Deriv socket is authorised",
            value=int(self._connection.ready),
        )
        yield CounterMetricFamily(
            "penpay_gateway_deriv_connects",
            "Connections of the agent's socket to Deriv",
            value=self._connection.connects,
        )
        balance = self._balances.last
        if balance is not None:
            agent = GaugeMetricFamily(
                "penpay_gateway_agent_balance_cents",
                "The agent's last known Deriv balance",
                labels=["loginid", "currency"],
            )
            agent.add_metric([balance.loginid, balance.currency], balance.balance_cents)
            yield agent
        calls = CounterMetricFamily("penpay_gateway_calls", "gRPC calls by method and status", labels=["rpc", "status"])
        for (rpc, status), n in sorted(self._service.calls.items()):
            calls.add_metric([rpc, status], n)
        yield calls
        answers = CounterMetricFamily(
            "penpay_gateway_money_answers", "Deriv's answers to transfers and withdrawals", labels=["kind", "outcome"]
        )
        for (kind, outcome), n in sorted(self._service.outcomes.items()):
            answers.add_metric([kind, outcome], n)
        yield answers
