"""Every service's Dockerfile builds an image with that service alone.

No Docker engine runs here, so the tests read the Dockerfiles: what they copy
must exist and survive .dockerignore, the runtime stage must be slim,
non-root, exec-form and health-checked, and the builder's package step,
replayed on exactly the copied files, must yield a wheel holding this service,
services/common and the generated code, and nothing else. The packaged
services then run as the containers do: bound to 0.0.0.0 with the
certificates ``make certs`` issues, probed on the plaintext health port.
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import time
import tomllib
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common import healthprobe
from services.devstack import certs
from tests.ops.dockerfile import Stage, copies, dockerignore_excludes, env, read_dockerignore, stages
from tests.support.grpcurl import grpcurl_path
from tests.support.processes import REPO_ROOT, free_port

SERVICES = {"gateway": 8000, "market": 50051, "strategy": 50052, "executor": 50053}
GRPC_SERVICE_NAMES = {"market": "MarketData", "strategy": "Strategy", "executor": "Executor"}
# The plaintext, health-only port of every gRPC image (the service port wants a client certificate).
HEALTH_PORT = 50050
DEPLOYMENT_DOC = REPO_ROOT / "docs" / "deployment.md"
RUNTIME_BASE = "python:3.13-slim"


def dockerfile(service: str) -> list[Stage]:
    path = REPO_ROOT / "services" / service / "Dockerfile"
    assert path.exists(), f"{path} is missing"
    return stages(path.read_text())


def module_file(module: str) -> Path | None:
    """Where ``python -m module`` finds its code in this repository (generated code included)."""
    parts = module.split(".")
    for root in (REPO_ROOT, REPO_ROOT / "generated"):
        package_main = root.joinpath(*parts, "__main__.py")
        plain = root.joinpath(*parts[:-1], parts[-1] + ".py")
        if package_main.exists():
            return package_main
        if plain.exists():
            return plain
    return None


@pytest.mark.parametrize("service", SERVICES)
def test_copy_sources_exist_and_are_in_the_build_context(service: str) -> None:
    ignored = read_dockerignore(REPO_ROOT / ".dockerignore")
    all_stages = dockerfile(service)
    stage_names = {stage.name for stage in all_stages}
    for stage in all_stages:
        for copy in copies(stage):
            if copy.from_stage is not None:
                assert copy.from_stage in stage_names, f"COPY --from={copy.from_stage}: no such stage"
                continue
            for source in copy.sources:
                assert (REPO_ROOT / source).exists(), f"{service}: COPY {source} does not exist in the repository"
                assert not dockerignore_excludes(ignored, source), f"{service}: .dockerignore drops {source}"


# Shared libraries an image carries besides services/common, by service.
LIBRARIES = {"gateway": ("notifications", "analytics")}   # analytics: the dashboard's calibration


def own_packages(service: str) -> set[str]:
    return {"common", service, *LIBRARIES.get(service, ())}


@pytest.mark.parametrize("service", SERVICES)
def test_image_holds_only_its_own_service(service: str) -> None:
    sources = {source.rstrip("/") for stage in dockerfile(service) for copy in copies(stage)
               if copy.from_stage is None for source in copy.sources}
    from_services = {source for source in sources if source.startswith("services")}
    assert from_services == {"services/__init__.py", *(f"services/{package}" for package in own_packages(service))}
    assert "." not in sources and "services" not in sources, "never the whole tree"


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_stage_is_slim_non_root_exec_form_and_health_checked(service: str) -> None:
    all_stages = dockerfile(service)
    assert len(all_stages) >= 2, "multi-stage: a builder and a runtime"
    builder, runtime = all_stages[0], all_stages[-1]
    assert runtime.base == RUNTIME_BASE
    assert any("grpc_tools.protoc" in run.arguments for run in builder.all("RUN")), "the builder generates the protos"
    assert not any("grpc_tools" in run.arguments for run in runtime.all("RUN")), "no protoc in the runtime"

    user = runtime.last("USER")
    assert user is not None, "runtime stage sets USER"
    name = user.arguments.split(":")[0]
    assert name not in {"root", "0"}
    assert runtime.instructions.index(user) < runtime.instructions.index(runtime.all("ENTRYPOINT")[-1])

    assert env(runtime).get("PYTHONUNBUFFERED") == "1"

    entrypoint = runtime.last("ENTRYPOINT")
    assert entrypoint is not None and entrypoint.exec_form() == ["python", "-m", f"services.{service}"]
    command = runtime.last("CMD")
    assert command is None or command.exec_form() is not None, "CMD in exec form"

    exposed = [port for item in runtime.all("EXPOSE") for port in item.arguments.split()]
    assert str(SERVICES[service]) in exposed
    if service in GRPC_SERVICE_NAMES:
        assert str(HEALTH_PORT) in exposed
        assert env(runtime).get("GRPC_HEALTH_PORT") == str(HEALTH_PORT)
    # No key material and no way around authentication baked into an image.
    assert not {name for name in env(runtime) if name.startswith("GRPC_TLS_") or name == "GRPC_INSECURE"}


@pytest.mark.parametrize("service", SERVICES)
def test_entry_point_module_exists(service: str) -> None:
    # Written by the service's own engineers; this fails until it lands.
    assert module_file(f"services.{service}") is not None, f"services/{service}/__main__.py is missing"


@pytest.mark.parametrize("service", SERVICES)
def test_healthcheck_calls_real_modules_and_services(service: str) -> None:
    runtime = dockerfile(service)[-1]
    check = runtime.last("HEALTHCHECK")
    assert check is not None, "HEALTHCHECK present"
    options, _, command = check.arguments.partition("CMD")
    assert command.strip(), "HEALTHCHECK has a command"
    words = check.exec_form() or shlex.split(command)
    if service == "gateway":
        assert "/healthz" in command and "urllib.request" in command
        return
    assert words[:3] == ["python", "-m", "services.common.healthprobe"]
    assert module_file(words[2]) is not None
    full_name = f"tradebot.v1.{GRPC_SERVICE_NAMES[service]}"
    assert full_name in words
    proto = (REPO_ROOT / "protos/tradebot/v1" / f"{service}.proto").read_text()
    assert re.search(rf"^service {GRPC_SERVICE_NAMES[service]}\b", proto, re.M), f"{full_name} not in the proto"
    assert env(runtime).get("GRPC_PORT") == str(SERVICES[service])
    # The probe has no client certificate: it asks the plaintext health port.
    assert "127.0.0.1:${GRPC_HEALTH_PORT}" in command and env(runtime).get("GRPC_HEALTH_PORT") == str(HEALTH_PORT)


def test_dockerignore_keeps_certificates_out_of_every_image() -> None:
    ignored = read_dockerignore(REPO_ROOT / ".dockerignore")
    for path in ("certs", "certs/ca.key", "certs/executor.key", "certs/gateway.crt"):
        assert dockerignore_excludes(ignored, path), path
    gitignore = (REPO_ROOT / ".gitignore").read_text().split()
    assert "certs/" in gitignore or "certs" in gitignore


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _internal_closure(service: str) -> tuple[set[Path], set[str]]:
    """The repo files a service's code reaches through imports, and every name they import."""
    pending = sorted((REPO_ROOT / "services" / service).rglob("*.py"))
    seen: set[Path] = set()
    imported: set[str] = set()
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _imports(path):
            imported.add(name)
            if name.startswith("services."):
                target = module_file(name) or REPO_ROOT.joinpath(*name.split("."), "__init__.py")
                if target.exists() and "__main__" not in target.name:
                    pending.append(target)
    return seen, imported


@pytest.mark.parametrize("service", SERVICES)
def test_service_code_imports_only_itself_and_common(service: str) -> None:
    files, imported = _internal_closure(service)
    foreign = sorted(
        name for name in imported
        if name.startswith("services.") and name.split(".")[1] not in own_packages(service)
        and (REPO_ROOT / "services" / name.split(".")[1]).is_dir()
    )
    assert not foreign, f"services/{service} imports code its image does not contain: {foreign}"


def _requirement_closure(requirements: list[str]) -> set[str]:
    """Distribution names installed by these requirements (transitively, as the venv resolved them)."""
    normal = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    pending = [re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0] for requirement in requirements]
    found: set[str] = set()
    while pending:
        name = normal(pending.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requires = importlib.metadata.distribution(name).requires or []
        except importlib.metadata.PackageNotFoundError:
            continue
        pending.extend(
            re.split(r"[\s\[<>=!~;(]", item, maxsplit=1)[0] for item in requires if "extra ==" not in item
        )
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_third_party_imports_come_with_the_service_extra(service: str) -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    installed = _requirement_closure(project["dependencies"] + project["optional-dependencies"][service])
    providers = importlib.metadata.packages_distributions()
    _, imported = _internal_closure(service)
    missing = {}
    for name in imported:
        top = name.split(".")[0]
        if top in sys.stdlib_module_names or top in {"services", "tradebot", "__future__"}:
            continue
        dists = {re.sub(r"[-_.]+", "-", dist).lower() for dist in providers.get(top, [])}
        if not dists & installed:
            missing[top] = sorted(dists) or ["<not installed>"]
    assert not missing, f"services/{service} imports packages its image lacks (extra '{service}'): {missing}"


def build_package(service: str, workdir: Path) -> Path:
    """Replay the builder stage on exactly the files it copies; return the wheel."""
    builder = dockerfile(service)[0]
    context = workdir / "src"
    context.mkdir()
    for copy in copies(builder):
        assert copy.from_stage is None
        destination = context / copy.destination
        for source in copy.sources:
            origin = REPO_ROOT / source
            if origin.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-r", f"{origin}/.", str(destination)], check=True)
            else:
                target = destination / origin.name if copy.destination.endswith("/") else destination
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(origin.read_bytes())
    # Every builder step that does not download: reading the pins, protoc.
    # (Installing into /opt/venv is replaced by the wheel build below.)
    for run in builder.all("RUN"):
        for step in run.arguments.split(" && "):
            step = step.strip()
            if "pip install" in step or step.startswith("/opt/venv"):
                continue
            step = re.sub(r"^python ", f"{sys.executable} ", step)
            done = subprocess.run(["sh", "-c", step], cwd=context, capture_output=True, text=True, check=False)
            assert done.returncode == 0, f"{service}: builder step failed: {step}\n{done.stderr}"
    wheels = workdir / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(wheels), "."],
        cwd=context, check=True, capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    built: dict[str, Path] = {}

    def get(service: str) -> Path:
        if service not in built:
            built[service] = build_package(service, tmp_path_factory.mktemp(f"image-{service}"))
        return built[service]

    return get


@pytest.mark.parametrize("service", SERVICES)
def test_builder_packages_this_service_common_and_generated_code(
    service: str, packaged: Callable[[str], Path]
) -> None:
    wheel = packaged(service)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    installed = (wheel.parent.parent / "src" / "requirements.txt").read_text().split()
    assert installed == project["dependencies"] + project["optional-dependencies"][service]
    protoc_pin = (wheel.parent.parent / "src" / "protoc-requirements.txt").read_text().split()
    grpcio_pin = next(pin for pin in project["dependencies"] if pin.startswith("grpcio=="))
    assert protoc_pin == [grpcio_pin.replace("grpcio", "grpcio-tools")], "protoc matches the grpcio runtime"
    names = zipfile.ZipFile(wheel).namelist()
    packages = {"/".join(name.split("/")[:2]) for name in names if name.endswith(".py")}
    assert {f"services/{service}", "services/common", "tradebot/v1"} <= packages
    assert {package for package in packages if package.startswith("services/") and package.count("/") == 1
            and not package.endswith(".py")} == {f"services/{package}" for package in own_packages(service)}
    assert f"services/{service}/__main__.py" in names, "the entry point is packaged"
    assert "services/common/healthprobe.py" in names
    if service == "gateway":   # the dashboard ships its stylesheet: it works offline, no CDN
        assert "services/gateway/dashboard/static/dashboard.css" in names
    for proto in ("common", "market", "strategy", "executor"):
        assert f"tradebot/v1/{proto}_pb2.py" in names


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What `make certs` writes: the CA and one key pair per identity."""
    directory = tmp_path_factory.mktemp("certs")
    certs.generate(directory)
    return directory


def _tls_env(service: str, tls: Path) -> dict[str, str]:
    """The GRPC_TLS_* a container gets: server side for the gRPC services, client side for their callers."""
    values = {}
    if service in GRPC_SERVICE_NAMES:
        values |= {"GRPC_TLS_CERT": str(tls / f"{service}.crt"), "GRPC_TLS_KEY": str(tls / f"{service}.key"),
                   "GRPC_TLS_CLIENT_CA": str(tls / "ca.crt")}
    if service in ("gateway", "executor"):
        values |= {"GRPC_TLS_CA": str(tls / "ca.crt"), "GRPC_TLS_CLIENT_CERT": str(tls / f"{service}.crt"),
                   "GRPC_TLS_CLIENT_KEY": str(tls / f"{service}.key")}
    return values


def _service_env(service: str, port: int, health_port: int, mongo_uri: str, tls: Path | None) -> dict[str, str]:
    tls_env = _tls_env(service, tls) if tls is not None else {}
    unreachable = f"127.0.0.1:{free_port()}"  # health must not need the other services
    if service == "gateway":
        return {
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
            "CRON_SECRET": "packaged-gateway-secret-0123456789abcdef",
            "MONGODB_URI": mongo_uri, "MONGODB_DB": "packaged_smoke",
            "MARKET_ADDR": unreachable, "STRATEGY_ADDR": unreachable, "EXECUTOR_ADDR": unreachable, **tls_env,
        }
    # As in the image: every interface, and the plaintext health port beside the service port.
    values = {"GRPC_HOST": "0.0.0.0", "GRPC_PORT": str(port), "GRPC_HEALTH_PORT": str(health_port), **tls_env}
    if service == "market":
        values["MARKET_DATA_SOURCE"] = "simulated"
    if service == "executor":
        from cryptography.fernet import Fernet

        values |= {"CREDENTIALS_KEYS": Fernet.generate_key().decode(), "MONGODB_URI": mongo_uri,
                   "MONGODB_DB": "packaged_smoke", "MARKET_ADDR": unreachable}
    return values


def _healthy(service: str, port: int, health_port: int) -> bool:
    if service == "gateway":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False
    # What the HEALTHCHECK and the kubelet do: plaintext, on the health port.
    code, _ = healthprobe.check(f"127.0.0.1:{health_port}", f"tradebot.v1.{GRPC_SERVICE_NAMES[service]}", timeout=1)
    return code == 0


def _tls_channel(port: int, tls: Path, identity: str | None) -> grpc.Channel:
    """A channel to the service port as ``identity`` (a certificate from `make certs`), or with none."""
    ca = (tls / "ca.crt").read_bytes()
    if identity is None:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=ca,
                                                   private_key=(tls / f"{identity}.key").read_bytes(),
                                                   certificate_chain=(tls / f"{identity}.crt").read_bytes())
    return grpc.secure_channel(f"127.0.0.1:{port}", credentials)


def _check_service_port_wants_a_client_certificate(service: str, port: int, tls: Path) -> None:
    full_name = f"tradebot.v1.{GRPC_SERVICE_NAMES[service]}"
    code, status = healthprobe.check(f"127.0.0.1:{port}", full_name, timeout=2)
    assert code != 0, f"{service} answers plaintext on its service port: {status}"
    with _tls_channel(port, tls, None) as channel, pytest.raises(grpc.RpcError) as refused:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=full_name), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "a caller without a certificate gets in"
    # The operator's certificate (grpcurl) passes the handshake; the server name 127.0.0.1 is in the certificate.
    with _tls_channel(port, tls, "operator") as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=full_name), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    _run_documented_grpcurl(service, port, tls)
    if service == "executor":
        from tradebot.v1 import executor_pb2, executor_pb2_grpc

        # Only the gateway's identity drives trades: not the operator, not another service.
        for identity in ("operator", "market", "strategy", "executor"):
            with _tls_channel(port, tls, identity) as channel, pytest.raises(grpc.RpcError) as denied:
                executor_pb2_grpc.ExecutorStub(channel).RunCycle(executor_pb2.RunCycleRequest(), timeout=5)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, identity


def _run_documented_grpcurl(service: str, port: int, tls: Path) -> None:
    """docs/deployment.md's grpcurl lines for this service, as written: only certs/ and <host> substituted."""
    lines = [line.strip() for line in DEPLOYMENT_DOC.read_text().splitlines()
             if line.strip().startswith("grpcurl -cacert certs/") and f"-servername {service} " in line]
    assert lines, f"docs/deployment.md shows no grpcurl command for {service}"
    for line in lines:
        words = shlex.split(line)
        assert f"<host>:{SERVICES[service]}" in words, f"wrong port for {service}: {line}"
        words = [word.replace("certs/", f"{tls}/").replace(f"<host>:{SERVICES[service]}", f"127.0.0.1:{port}")
                 for word in words]
        done = subprocess.run([grpcurl_path(), *words[1:]], capture_output=True, text=True, timeout=30, check=False)
        if words[-1] == "list":
            assert done.returncode == 0, f"{line}\n{done.stderr}"
            assert f"tradebot.v1.{GRPC_SERVICE_NAMES[service]}" in done.stdout.split()
        elif words[-1] == "tradebot.v1.Executor/RunCycle":
            assert done.returncode != 0 and "PermissionDenied" in done.stderr, f"{line}\n{done.stdout}{done.stderr}"
        else:
            raise AssertionError(f"no expectation for the documented command: {line}")


def _packaged_process(service: str, wheel: Path, tmp_path: Path, service_env: dict[str, str]) -> subprocess.Popen[str]:
    # What the image runs: the wheel's code only (no repository on the path,
    # no editable install), `python -m services.<name>`.
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    workdir = tmp_path / "app"
    workdir.mkdir()
    site_packages = sysconfig.get_paths()["purelib"]
    process_env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1",
                   "PYTHONPATH": f"{unpacked}{os.pathsep}{site_packages}", **service_env}
    # -S: no site hooks (so the repository's editable install is invisible); -P: no cwd on the path.
    return subprocess.Popen([sys.executable, "-S", "-P", "-m", f"services.{service}"], cwd=workdir, env=process_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("service", SERVICES)
def test_packaged_service_starts_alone_with_mutual_tls_and_stops_on_sigterm(
    service: str, packaged: Callable[[str], Path], mongo_uri: str, tls_files: Path, tmp_path: Path
) -> None:
    port, health_port = free_port(), free_port()
    process = _packaged_process(service, packaged(service), tmp_path,
                                _service_env(service, port, health_port, mongo_uri, tls_files))
    try:
        deadline = time.monotonic() + 30
        while not _healthy(service, port, health_port):
            assert process.poll() is None, f"{service} exited early:\n{process.communicate()[0]}"
            assert time.monotonic() < deadline, f"{service} never became healthy"
            time.sleep(0.2)
        if service in GRPC_SERVICE_NAMES:
            _check_service_port_wants_a_client_certificate(service, port, tls_files)
        # `docker stop`
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
        # serve() drains and returns 0; uvicorn drains, then re-raises the signal (exit 143 in Docker).
        clean = {0, -signal.SIGTERM} if service == "gateway" else {0}
        assert process.returncode in clean, f"{service} exited {process.returncode} on SIGTERM:\n{output}"
        assert "Traceback" not in output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.parametrize("service", SERVICES)
def test_packaged_service_refuses_to_start_without_tls(
    service: str, packaged: Callable[[str], Path], mongo_uri: str, tmp_path: Path
) -> None:
    # The image's defaults with the certificates left out: a server on 0.0.0.0, a gateway
    # dialling the services by name. Each must stop with a message, never serve plaintext.
    port, health_port = free_port(), free_port()
    service_env = _service_env(service, port, health_port, mongo_uri, None)
    if service == "gateway":
        service_env |= {"MARKET_ADDR": "dns:///market:50051", "STRATEGY_ADDR": "dns:///strategy:50052",
                        "EXECUTOR_ADDR": "dns:///executor:50053"}
    process = _packaged_process(service, packaged(service), tmp_path, service_env)
    try:
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode not in (0, None), f"{service} started without TLS:\n{output}"
    assert "GRPC_INSECURE" in output and "GRPC_TLS" in output, output
