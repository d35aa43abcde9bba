"""docker-compose.yml checked by the real ``docker-compose config`` (no engine needed).

Install: ``apt-get install -y --no-install-recommends docker-compose`` (Debian).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from services.devstack import certs
from tests.support.processes import REPO_ROOT

COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
GRPC_SERVICES = {"market": 50051, "strategy": 50052, "executor": 50053}
APP_SERVICES = ("gateway", *GRPC_SERVICES)
HEALTH_PORT = 50050
TLS_DIR = "/etc/tradebot/tls"
SECRETS_BY_OWNER = {
    "CRON_SECRET": "gateway",
    "STATUS_TOKEN": "gateway",
    "CREDENTIALS_KEYS": "executor",
    "OPENAI_API_KEY": "strategy",
}
FILLED = {
    "CRON_SECRET": "cron-secret-for-config-test",
    "STATUS_TOKEN": "status-token-for-config-test",
    "CREDENTIALS_KEYS": "fernet-key-for-config-test",
    "OPENAI_API_KEY": "openai-key-for-config-test",
    "MONGO_ROOT_USERNAME": "root-user-for-config-test",
    "MONGO_ROOT_PASSWORD": "root-password-for-config-test",
    "MONGO_APP_USERNAME": "app-user-for-config-test",
    "MONGO_APP_PASSWORD": "app-password-for-config-test",
}
SERVER_TLS = {"GRPC_TLS_CERT": f"{TLS_DIR}/tls.crt", "GRPC_TLS_KEY": f"{TLS_DIR}/tls.key",
              "GRPC_TLS_CLIENT_CA": f"{TLS_DIR}/ca.crt"}
CLIENT_TLS = {"GRPC_TLS_CA": f"{TLS_DIR}/ca.crt", "GRPC_TLS_CLIENT_CERT": f"{TLS_DIR}/tls.crt",
              "GRPC_TLS_CLIENT_KEY": f"{TLS_DIR}/tls.key"}


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose is not installed: apt-get install -y --no-install-recommends docker-compose"
    return found


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # --env-file keeps a developer's own .env out of the test; a clean
    # environment keeps the shell's variables out of the interpolation.
    return subprocess.run(
        [docker_compose(), "--project-directory", str(REPO_ROOT), "-f", str(COMPOSE_FILE),
         "--env-file", str(env_file), *args],
        capture_output=True, text=True, timeout=60, check=False, env={"PATH": "/usr/bin:/bin"},
    )


def env_file_with(directory: Path, values: dict[str, str]) -> Path:
    text = ENV_EXAMPLE.read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{name} is not in .env.example"
    path = directory / ".env"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def filled_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return env_file_with(tmp_path_factory.mktemp("compose"), FILLED)


@pytest.fixture(scope="module")
def resolved(filled_env: Path) -> dict[str, Any]:
    result = compose(filled_env, "config")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def environment(resolved: dict[str, Any], name: str) -> dict[str, str]:
    return resolved["services"][name].get("environment") or {}


def mounts(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """target -> {source, type, read_only} for short and long volume syntax alike."""
    found = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            kind = "bind" if source.startswith(("/", ".")) else "volume"
            found[target] = {"source": source, "type": kind, "read_only": mode == ["ro"]}
        else:
            found[volume["target"]] = {"source": volume["source"], "type": volume["type"],
                                       "read_only": bool(volume.get("read_only")), "raw": volume}
    return found


def test_compose_file_is_valid(filled_env: Path) -> None:
    result = compose(filled_env, "config", "-q")
    assert result.returncode == 0, result.stderr


def test_unfilled_env_file_stops_before_anything_starts() -> None:
    # .env.example copied as is: the required secrets are empty.
    result = compose(ENV_EXAMPLE, "config", "-q")
    assert result.returncode != 0
    assert "CRON_SECRET" in result.stderr or "CREDENTIALS_KEYS" in result.stderr or "MONGO_" in result.stderr


@pytest.mark.parametrize("missing", ["MONGO_ROOT_USERNAME", "MONGO_ROOT_PASSWORD", "MONGO_APP_USERNAME",
                                     "MONGO_APP_PASSWORD"])
def test_mongo_credentials_are_required(missing: str, tmp_path: Path) -> None:
    values = {**FILLED, missing: ""}
    result = compose(env_file_with(tmp_path, values), "config", "-q")
    assert result.returncode != 0
    assert missing in result.stderr


def test_services_and_images(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    assert set(services) == {"mongo", "tls-init", "prometheus", "alertmanager", *APP_SERVICES}
    assert services["mongo"]["image"] == "mongo:7"
    for name in APP_SERVICES:
        assert services[name]["build"]["dockerfile"] == f"services/{name}/Dockerfile"
        assert Path(services[name]["build"]["context"]).resolve() == REPO_ROOT


def test_mongo_keeps_data_in_a_named_volume_and_is_health_checked(resolved: dict[str, Any]) -> None:
    mongo = resolved["services"]["mongo"]
    assert "mongo-data" in resolved["volumes"]
    assert mounts(mongo)["/data/db"]["source"] == "mongo-data"
    assert "mongosh" in " ".join(mongo["healthcheck"]["test"])


def test_every_service_is_health_checked_on_the_plaintext_health_port(resolved: dict[str, Any]) -> None:
    # The service port wants a client certificate; the probe has none, so it asks the health port.
    services = resolved["services"]
    for name, port in GRPC_SERVICES.items():
        env = environment(resolved, name)
        test = services[name]["healthcheck"]["test"]
        assert test[:4] == ["CMD", "python", "-m", "services.common.healthprobe"]
        assert test[4] == f"127.0.0.1:{HEALTH_PORT}"
        assert env["GRPC_HEALTH_PORT"] == str(HEALTH_PORT)
        assert env["GRPC_PORT"] == str(port)
        assert env["GRPC_HOST"] == "0.0.0.0"
    assert "/healthz" in " ".join(services["gateway"]["healthcheck"]["test"])


def test_start_order_waits_for_healthy_dependencies(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    gateway_needs = services["gateway"]["depends_on"]
    assert set(gateway_needs) == {"mongo", "tls-init", *GRPC_SERVICES}
    assert all(item["condition"] == "service_healthy" for name, item in gateway_needs.items() if name != "tls-init")
    assert services["executor"]["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_services_scale_out(resolved: dict[str, Any]) -> None:
    # `docker compose up --scale strategy=3 --scale market=2` needs no fixed
    # names and no host ports on scaled services; clients resolve every replica.
    services = resolved["services"]
    for name, service in services.items():
        assert "container_name" not in service, name
        if name != "gateway":
            assert not service.get("ports"), f"{name} publishes a host port"
    gateway_env = environment(resolved, "gateway")
    for name, port in GRPC_SERVICES.items():
        assert gateway_env[f"{name.upper()}_ADDR"] == f"dns:///{name}:{port}"
    (published,) = services["gateway"]["ports"]
    assert published["target"] == 8000


def test_each_secret_reaches_only_its_own_service(resolved: dict[str, Any]) -> None:
    for secret, owner in SECRETS_BY_OWNER.items():
        holders = {name for name, service in resolved["services"].items()
                   if secret in (service.get("environment") or {})}
        assert holders == {owner}, f"{secret} reaches {holders}"
        assert resolved["services"][owner]["environment"][secret].endswith("-for-config-test")


# ---------------------------------------------------------------- mutual TLS


@pytest.mark.parametrize("name", GRPC_SERVICES)
def test_grpc_servers_require_mutual_tls_with_their_own_certificate(resolved: dict[str, Any], name: str) -> None:
    env = environment(resolved, name)
    assert SERVER_TLS.items() <= env.items(), f"{name} is missing server TLS settings"
    mount = mounts(resolved["services"][name])[TLS_DIR]
    assert mount == {"source": f"tls-{name}", "type": "volume", "read_only": True}


@pytest.mark.parametrize("name", ["gateway", "executor"])
def test_grpc_clients_present_their_own_certificate(resolved: dict[str, Any], name: str) -> None:
    env = environment(resolved, name)
    assert CLIENT_TLS.items() <= env.items(), f"{name} is missing client TLS settings"
    assert mounts(resolved["services"][name])[TLS_DIR]["source"] == f"tls-{name}"


def test_executor_reads_market_data_from_the_market_service(resolved: dict[str, Any]) -> None:
    assert environment(resolved, "executor")["MARKET_ADDR"] == "dns:///market:50051"


def test_every_target_host_is_named_in_the_server_certificate(resolved: dict[str, Any]) -> None:
    # The clients verify the server's certificate against the host in the target.
    for client in ("gateway", "executor"):
        for variable, target in environment(resolved, client).items():
            if not variable.endswith("_ADDR"):
                continue
            host = target.removeprefix("dns:///").rsplit(":", 1)[0]
            service = variable.removesuffix("_ADDR").lower()
            names = {str(name.value) for name in certs.server_names(service)}
            assert host in names, f"{client}: {target} is not in {service}'s certificate"


def test_no_service_runs_without_authentication(resolved: dict[str, Any]) -> None:
    for name, service in resolved["services"].items():
        assert "GRPC_INSECURE" not in (service.get("environment") or {}), f"{name} sets GRPC_INSECURE"
    assert "${GRPC_INSECURE" not in COMPOSE_FILE.read_text()


def test_each_service_sees_only_its_own_key(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    certs_dir = str(REPO_ROOT / "certs")
    for name, service in services.items():
        sources = {mount["source"] for mount in mounts(service).values()}
        if name == "tls-init":
            continue
        assert certs_dir not in sources, f"{name} mounts the whole certs/ folder"
        tls_volumes = {source for source in sources if source.startswith("tls-")}
        assert tls_volumes <= {f"tls-{name}"}, f"{name} mounts {tls_volumes}"
    init_targets = {mount["source"]: target for target, mount in mounts(services["tls-init"]).items()}
    assert {source for source in init_targets if source.startswith("tls-")} == {f"tls-{name}" for name in APP_SERVICES}


def test_nothing_starts_before_the_certificates_are_installed(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    for name in APP_SERVICES:
        assert services[name]["depends_on"]["tls-init"] == {"condition": "service_completed_successfully"}
    init = services["tls-init"]
    assert init["restart"] == "no"
    (source,) = [mount for mount in mounts(init).values() if mount["type"] == "bind"]
    # Long syntax without create_host_path: a missing ./certs is an error, not an empty folder.
    assert source["source"] == str(REPO_ROOT / "certs")
    assert source["read_only"] is True
    assert not source["raw"].get("bind", {}).get("create_host_path")


def tls_init_script(resolved: dict[str, Any]) -> tuple[list[str], list[str]]:
    init = resolved["services"]["tls-init"]
    # compose turns $$ into $ when it runs the container.
    entrypoint = [part.replace("$$", "$") for part in init["entrypoint"]]
    return entrypoint, list(init["command"])


def run_tls_init(resolved: dict[str, Any], source: Path, destination: Path) -> subprocess.CompletedProcess[str]:
    entrypoint, command = tls_init_script(resolved)
    assert command[2] == "10001:10001", "installed for the services' user"
    owner = f"{os.getuid()}:{os.getgid()}"  # the test cannot chown to 10001
    return subprocess.run([*entrypoint, str(source), str(destination), owner],
                          capture_output=True, text=True, timeout=30, check=False)


def test_tls_init_refuses_to_run_without_make_certs(resolved: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "certs"
    certs.generate(source)
    (source / "executor.key").unlink()
    done = run_tls_init(resolved, source, tmp_path / "tls")
    assert done.returncode != 0
    assert "executor.key" in done.stderr and "make certs" in done.stderr
    assert not (tmp_path / "tls").exists(), "nothing is installed from an incomplete set"


def test_tls_init_installs_each_services_own_pair(resolved: dict[str, Any], tmp_path: Path) -> None:
    source = tmp_path / "certs"
    certs.generate(source)
    destination = tmp_path / "tls"
    done = run_tls_init(resolved, source, destination)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in destination.iterdir()) == sorted(APP_SERVICES)
    for name in APP_SERVICES:
        installed = destination / name
        assert sorted(path.name for path in installed.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
        assert (installed / "tls.key").read_bytes() == (source / f"{name}.key").read_bytes()
        assert (installed / "tls.crt").read_bytes() == (source / f"{name}.crt").read_bytes()
        assert (installed / "ca.crt").read_bytes() == (source / "ca.crt").read_bytes()
        assert stat.S_IMODE((installed / "tls.key").stat().st_mode) == 0o400
    # Re-running (every `docker compose up`) replaces the files in place.
    again = run_tls_init(resolved, source, destination)
    assert again.returncode == 0, again.stderr


# ---------------------------------------------------------------- MongoDB


def test_mongo_requires_authentication(resolved: dict[str, Any]) -> None:
    env = environment(resolved, "mongo")
    assert env["MONGO_INITDB_ROOT_USERNAME"] == FILLED["MONGO_ROOT_USERNAME"]
    assert env["MONGO_INITDB_ROOT_PASSWORD"] == FILLED["MONGO_ROOT_PASSWORD"]
    # The root password is for initialisation: no service gets it.
    for name in APP_SERVICES:
        assert FILLED["MONGO_ROOT_PASSWORD"] not in str(environment(resolved, name))


def test_mongo_creates_a_read_write_application_user(resolved: dict[str, Any]) -> None:
    mongo = resolved["services"]["mongo"]
    scripts = {target: mount for target, mount in mounts(mongo).items()
               if target.startswith("/docker-entrypoint-initdb.d/")}
    (target, mount), = scripts.items()
    assert target.endswith(".js") and mount["read_only"]
    script = Path(mount["source"])
    assert script == REPO_ROOT / "deploy/mongo/init-app-user.js"
    text = script.read_text()
    assert re.search(r"createUser\(", text)
    assert re.findall(r"role:\s*\"(\w+)\"", text) and set(re.findall(r"role:\s*\"(\w+)\"", text)) == {"readWrite"}
    for variable in set(re.findall(r"process\.env\.(\w+)", text)):
        assert variable in environment(resolved, "mongo"), f"the init script reads {variable}, mongo lacks it"
    assert environment(resolved, "mongo")["MONGO_APP_DB"] == environment(resolved, "gateway")["MONGODB_DB"]


@pytest.mark.parametrize("name", ["gateway", "executor"])
def test_services_connect_as_the_application_user(resolved: dict[str, Any], name: str) -> None:
    env = environment(resolved, name)
    uri = urlsplit(env["MONGODB_URI"])
    assert uri.scheme == "mongodb"
    assert (uri.username, uri.password) == (FILLED["MONGO_APP_USERNAME"], FILLED["MONGO_APP_PASSWORD"])
    assert (uri.hostname, uri.port) == ("mongo", 27017)
    assert parse_qs(uri.query)["authSource"] == [env["MONGODB_DB"]]
    assert uri.path == f"/{env['MONGODB_DB']}"


def test_mongo_health_check_logs_in_as_the_application_user(resolved: dict[str, Any]) -> None:
    test = resolved["services"]["mongo"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")
    assert command.startswith("mongosh ")
    assert '--username "$MONGO_APP_USERNAME"' in command and '--password "$MONGO_APP_PASSWORD"' in command
    assert '--authenticationDatabase "$MONGO_APP_DB"' in command
    # The container's own address: the first-start initialisation listens on 127.0.0.1 only.
    assert '--host "$(hostname)"' in command
    for variable in re.findall(r"\$(\w+)", command):
        assert variable in environment(resolved, "mongo")


def test_mongo_is_only_on_an_internal_network(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    (network,) = services["mongo"]["networks"]
    assert resolved["networks"][network].get("internal") is True
    members = {name for name, service in services.items() if network in (service.get("networks") or {})}
    assert members == {"mongo", "gateway", "executor"}


def test_networks_carry_only_the_links_the_services_use(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    networks = {name: set(services[name].get("networks") or {}) for name in APP_SERVICES}
    for client, server in [("gateway", "market"), ("gateway", "strategy"), ("gateway", "executor"),
                           ("executor", "market")]:
        assert networks[client] & networks[server], f"{client} cannot reach {server}"
    assert not networks["strategy"] & networks["executor"], "strategy can open a connection to the executor"
    mongo = set(services["mongo"]["networks"])
    assert not (networks["strategy"] | networks["market"]) & mongo
    for name in APP_SERVICES:  # Binance, OpenAI, webhooks
        assert any(not resolved["networks"][network].get("internal") for network in networks[name]), name
    assert services["tls-init"]["network_mode"] == "none"


# ---------------------------------------------------------------- hardening


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_containers_are_hardened(resolved: dict[str, Any], name: str) -> None:
    service = resolved["services"][name]
    assert service["read_only"] is True
    assert any(str(entry).split(":")[0] == "/tmp" for entry in service["tmpfs"])
    assert service["cap_drop"] == ["ALL"]
    assert not service.get("cap_add")
    assert "no-new-privileges:true" in service["security_opt"]
    assert not service.get("privileged")
    user, _, group = str(service["user"]).partition(":")
    assert user.isdigit() and int(user) != 0, "numeric non-root user"
    assert group.isdigit() and int(group) != 0


def test_mongo_keeps_only_the_capabilities_its_entrypoint_needs(resolved: dict[str, Any]) -> None:
    mongo = resolved["services"]["mongo"]
    assert mongo["cap_drop"] == ["ALL"]
    # chown /data/db (CHOWN, DAC_OVERRIDE to walk mongod's 0700 folders), then gosu (SETUID, SETGID).
    assert set(mongo["cap_add"]) == {"CHOWN", "DAC_OVERRIDE", "SETUID", "SETGID"}
    assert "no-new-privileges:true" in mongo["security_opt"]
    assert not mongo.get("privileged")


def test_tls_init_is_confined(resolved: dict[str, Any]) -> None:
    init = resolved["services"]["tls-init"]
    assert init["cap_drop"] == ["ALL"]
    assert set(init["cap_add"]) == {"CHOWN", "DAC_OVERRIDE"}
    assert "no-new-privileges:true" in init["security_opt"]
    assert init["read_only"] is True


def test_prometheus_scrapes_every_service_with_the_tested_rules(resolved: dict[str, Any]) -> None:
    services = resolved["services"]
    prometheus = services["prometheus"]
    for name in APP_SERVICES:   # on each service's own network (the gateway is on all of them)
        assert set(services[name]["networks"]) & set(prometheus["networks"]), name
    config_mount = mounts(prometheus)["/etc/prometheus"]
    assert Path(config_mount["source"]).resolve() == (REPO_ROOT / "deploy" / "prometheus").resolve()
    assert config_mount["read_only"]
    config = yaml.safe_load((REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert {name: (job["names"], job["port"]) for name, job in jobs.items()} == {
        name: ([name], 9100) for name in APP_SERVICES}
    assert set(services["alertmanager"]["networks"]) == {"monitoring-net", "alerts-out"}
    assert resolved["networks"]["monitoring-net"].get("internal") is True
