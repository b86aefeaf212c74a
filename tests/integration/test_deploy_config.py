"""deploy/docker-compose.yml: the platform with MySQL 8 and Redis 7, as docker-compose itself reads it.

``docker-compose config`` (Debian's ``docker-compose`` package) validates the file against the Compose schema and
prints it resolved (anchors merged, ``env_file`` read, variables interpolated) without needing a Docker engine.
The assertions below are on that resolved form, i.e. on what ``docker-compose up`` would run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from penpay.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BINARY = shutil.which("docker-compose")
PENPAY_PROCESSES = ("sandbox", "gateway", "api", "worker")
LONG_RUNNING = ("mysql", "redis", *PENPAY_PROCESSES)

pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason="the docker-compose binary is absent (apt-get install -y docker-compose; .ci/run installs it)",
)


def compose(*args: str) -> subprocess.CompletedProcess[str]:
    # A clean environment: the operator's own PENPAY_*/MYSQL_* variables must not change what is checked.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/tmp")}
    assert BINARY is not None
    return subprocess.run(
        [BINARY, "-f", str(COMPOSE), *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = compose("config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def service(resolved: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = resolved["services"][name]
    return found


def settings_of(svc: dict[str, Any]) -> Settings:
    """The Settings a container of this service would build from its environment."""
    fields = {
        key.removeprefix("PENPAY_").lower(): value
        for key, value in svc["environment"].items()
        if key.removeprefix("PENPAY_").lower() in Settings.model_fields
    }
    return Settings(_env_file=None, **fields)  # type: ignore[call-arg]


class TestComposeFileValidates:
    def test_docker_compose_accepts_the_file(self) -> None:
        result = compose("config", "--quiet")
        assert result.returncode == 0, result.stderr

    def test_it_runs_every_penpay_process_with_mysql_8_and_redis_7(self, resolved: dict[str, Any]) -> None:
        assert set(resolved["services"]) >= {"mysql", "redis", "migrate", *PENPAY_PROCESSES}
        assert service(resolved, "mysql")["image"] == "mysql:8.0"
        assert service(resolved, "redis")["image"] == "redis:7"
        commands = {name: service(resolved, name)["command"][0] for name in PENPAY_PROCESSES}
        assert commands == {
            "sandbox": "penpay-sandbox",
            "gateway": "penpay-gateway",
            "api": "penpay-api",
            "worker": "penpay-worker",
        }


class TestHealth:
    @pytest.mark.parametrize("name", LONG_RUNNING)
    def test_every_long_running_service_has_a_healthcheck(self, resolved: dict[str, Any], name: str) -> None:
        check = service(resolved, name).get("healthcheck")
        assert check is not None, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert not check.get("disable", False)

    @pytest.mark.parametrize(
        ("name", "url"), [("api", ":8000/readyz"), ("gateway", ":8081/readyz"), ("worker", ":8082/readyz")]
    )
    def test_http_processes_are_healthy_when_their_readiness_endpoint_answers(
        self, resolved: dict[str, Any], name: str, url: str
    ) -> None:
        test = service(resolved, name)["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "penpay.devrun"]
        assert test[-1].endswith(url)


class TestMigration:
    def test_migrate_is_a_one_shot_penpay_migrate_that_waits_for_a_healthy_mysql(
        self, resolved: dict[str, Any]
    ) -> None:
        migrate = service(resolved, "migrate")
        assert migrate["command"] == ["penpay", "migrate"]
        assert migrate["restart"] == "no"
        assert "healthcheck" not in migrate
        assert migrate["depends_on"]["mysql"]["condition"] == "service_healthy"

    @pytest.mark.parametrize("name", ["api", "worker"])
    def test_the_processes_on_the_database_start_only_after_migrate_succeeded(
        self, resolved: dict[str, Any], name: str
    ) -> None:
        assert service(resolved, name)["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


class TestScaling:
    def test_the_worker_can_be_scaled_with_scale_worker_n(self, resolved: dict[str, Any]) -> None:
        worker = service(resolved, "worker")
        assert "container_name" not in worker, "a fixed container name allows one container only"
        assert not worker.get("ports"), "a fixed host port allows one container only"
        assert worker["command"] == ["penpay-worker", "--workers", "all"]

    def test_penpay_services_share_one_image_built_from_deploy_dockerfile(self, resolved: dict[str, Any]) -> None:
        penpay = [service(resolved, name) for name in ("migrate", *PENPAY_PROCESSES)]
        assert {svc["image"] for svc in penpay} == {"penpay:local"}
        assert {svc["build"]["dockerfile"] for svc in penpay} == {"deploy/Dockerfile"}
        assert {Path(svc["build"]["context"]) for svc in penpay} == {ROOT}


class TestWiring:
    @pytest.mark.parametrize("name", ["migrate", *PENPAY_PROCESSES])
    def test_every_process_builds_valid_sandbox_settings_from_its_environment(
        self, resolved: dict[str, Any], name: str
    ) -> None:
        settings = settings_of(service(resolved, name))
        assert settings.env.value == "sandbox"

    def test_values_with_shell_characters_arrive_as_env_example_means_them(self, resolved: dict[str, Any]) -> None:
        settings = settings_of(service(resolved, "worker"))
        assert settings.mail_from == "PenPay <no-reply@penpay.local>"
        assert settings.daraja_initiator_password.get_secret_value() == "Safaricom999!*!"

    def test_clients_reach_the_servers_by_container_hostname(self, resolved: dict[str, Any]) -> None:
        for name in ("api", "worker"):
            settings = settings_of(service(resolved, name))
            assert re.match(r"mysql\+asyncmy://root:[^@]+@mysql:3306/penpay$", settings.database_url)
            assert settings.redis_url == "redis://redis:6379/0"
            assert settings.gateway_grpc_addr == "gateway:50051"
            assert settings.daraja_base_url == "http://sandbox:8090"
            assert settings.deriv_ws_url == "ws://sandbox:8091/websockets/v3"
            assert settings.public_base_url == "http://api:8000"

    def test_servers_listen_on_every_interface_of_their_container(self, resolved: dict[str, Any]) -> None:
        assert settings_of(service(resolved, "api")).api_host == "0.0.0.0"
        assert settings_of(service(resolved, "gateway")).gateway_grpc_addr == "0.0.0.0:50051"
        sandbox = settings_of(service(resolved, "sandbox"))
        assert sandbox.daraja_base_url.startswith("http://0.0.0.0:")
        assert sandbox.deriv_ws_url.startswith("ws://0.0.0.0:")

    def test_daraja_callbacks_are_accepted_from_the_sandboxs_fixed_address(self, resolved: dict[str, Any]) -> None:
        address = service(resolved, "sandbox")["networks"]["penpay"]["ipv4_address"]
        assert settings_of(service(resolved, "api")).callback_allowed_ips == [address]
        ipam = resolved["networks"]["penpay"]["ipam"]["config"][0]
        assert ipaddress.ip_address(address) in ipaddress.ip_network(ipam["subnet"])
        assert ipaddress.ip_address(address) not in ipaddress.ip_network(ipam["ip_range"]), (
            "a dynamically addressed container (a scaled worker) could take the sandbox's address first"
        )


class TestDockerfile:
    def test_the_image_is_python_311_slim_runs_as_a_non_root_user_and_generates_the_grpc_code(self) -> None:
        text = DOCKERFILE.read_text()
        assert re.search(r"^FROM python:3\.11-slim\s*$", text, re.MULTILINE)
        users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert users, "no USER: the processes would run as root"
        assert users[-1] not in ("root", "0")
        assert "python -m penpay.protogen proto services/penpay/_proto" in text
        assert "pip install -c constraints.txt -e libs/penpay_domain -e ." in text  # make install's pinned versions
        assert re.search(r"^COPY .*\bconstraints\.txt\b", text, re.MULTILINE)
