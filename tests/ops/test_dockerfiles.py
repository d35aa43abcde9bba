"""Every service's Dockerfile builds an image with that service alone.

No Docker engine runs here, so the tests read the Dockerfiles: what they copy
must exist and survive .dockerignore, the runtime stage must be slim,
non-root, exec-form and health-checked, and the builder's package step,
replayed on exactly the copied files, must yield a wheel holding this service,
services/common and the generated code, and nothing else.
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

import pytest

from services.common import healthprobe
from tests.ops.dockerfile import Stage, copies, dockerignore_excludes, env, read_dockerignore, stages
from tests.support.processes import REPO_ROOT, free_port

SERVICES = {"gateway": 8000, "market": 50051, "strategy": 50052, "executor": 50053}
GRPC_SERVICE_NAMES = {"market": "MarketData", "strategy": "Strategy", "executor": "Executor"}
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
LIBRARIES = {"gateway": ("notifications",)}


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
    assert "${GRPC_PORT}" in command and env(runtime).get("GRPC_PORT") == str(SERVICES[service])


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
    for proto in ("common", "market", "strategy", "executor"):
        assert f"tradebot/v1/{proto}_pb2.py" in names


def _service_env(service: str, port: int, mongo_uri: str) -> dict[str, str]:
    if service == "gateway":
        unreachable = f"127.0.0.1:{free_port()}"  # /healthz must not need the backends
        return {
            "GATEWAY_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
            "CRON_SECRET": "packaged-gateway-secret-0123456789abcdef",
            "MONGODB_URI": mongo_uri, "MONGODB_DB": "packaged_smoke",
            "MARKET_ADDR": unreachable, "STRATEGY_ADDR": unreachable, "EXECUTOR_ADDR": unreachable,
        }
    env = {"GRPC_HOST": "127.0.0.1", "GRPC_PORT": str(port)}
    if service == "market":
        env["MARKET_DATA_SOURCE"] = "simulated"
    if service == "executor":
        from cryptography.fernet import Fernet

        env |= {"CREDENTIALS_KEYS": Fernet.generate_key().decode(), "MONGODB_URI": mongo_uri,
                "MONGODB_DB": "packaged_smoke"}
    return env


def _healthy(service: str, port: int) -> bool:
    if service == "gateway":
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as reply:
                return reply.status == 200
        except OSError:
            return False
    code, _ = healthprobe.check(f"127.0.0.1:{port}", f"tradebot.v1.{GRPC_SERVICE_NAMES[service]}", timeout=1)
    return code == 0


@pytest.mark.parametrize("service", SERVICES)
def test_packaged_service_starts_alone_and_stops_on_sigterm(
    service: str, packaged: Callable[[str], Path], mongo_uri: str, tmp_path: Path
) -> None:
    # What the image runs: the wheel's code only (no repository on the path,
    # no editable install), `python -m services.<name>`, then `docker stop`.
    unpacked = tmp_path / "site"
    zipfile.ZipFile(packaged(service)).extractall(unpacked)
    workdir = tmp_path / "app"
    workdir.mkdir()
    port = free_port()
    site_packages = sysconfig.get_paths()["purelib"]
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": f"{unpacked}{os.pathsep}{site_packages}", **_service_env(service, port, mongo_uri)}
    # -S: no site hooks (so the repository's editable install is invisible); -P: no cwd on the path.
    process = subprocess.Popen([sys.executable, "-S", "-P", "-m", f"services.{service}"], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _healthy(service, port):
            assert process.poll() is None, f"{service} exited early:\n{process.communicate()[0]}"
            assert time.monotonic() < deadline, f"{service} never became healthy"
            time.sleep(0.2)
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
