"""pytest plugin: a session-scoped real Kafka broker for integration tests.

Register it from tests/conftest.py with either::

    pytest_plugins = ["tests.kafka_broker"]          # when `tests` is importable
    from tests.kafka_broker import kafka_bootstrap  # or import the fixture itself

(``pytest_plugins`` also registers the ``kafka`` marker via ``pytest_configure``.)

``kafka_bootstrap`` yields ``"host:port"``, taken from the first that works:

1. env ``KAFKA_BOOTSTRAP_SERVERS`` (used as given);
2. a broker already running from ``.kafka/`` (``tools/kafka/broker.py up``) that answers;
3. a broker started now by ``tools/kafka/broker.py`` (needs ``java``, and ``mvn`` unless
   ``tools/kafka/lib`` is resolved); stopped at session end.  Under pytest-xdist each
   worker starts its own in ``.kafka/xdist-<worker>/``;
4. testcontainers' Kafka module, if importable and a Docker engine answers
   (image from env ``OFFSETLEDGER_KAFKA_IMAGE``, else the module's default);
5. otherwise ``pytest.skip`` naming what is missing — or ``pytest.fail`` when
   env ``OFFSETLEDGER_REQUIRE_KAFKA=1``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["kafka_bootstrap", "load_broker_module", "pytest_configure"]

REPO_ROOT = Path(__file__).resolve().parent.parent
BROKER_SCRIPT = REPO_ROOT / "tools" / "kafka" / "broker.py"
_MODULE_NAME = "offsetledger_tools_kafka_broker"


def load_broker_module() -> ModuleType:
    """Import tools/kafka/broker.py (not a package) as a module."""
    mod = sys.modules.get(_MODULE_NAME)
    if mod is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, BROKER_SCRIPT)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {BROKER_SCRIPT}")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[_MODULE_NAME] = mod
        spec.loader.exec_module(mod)
    return mod


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (kafka_bootstrap fixture)")


def _unavailable(reasons: list[str]) -> NoReturn:
    msg = "no Kafka broker available: " + "; ".join(reasons)
    if os.environ.get("OFFSETLEDGER_REQUIRE_KAFKA") == "1":
        pytest.fail(msg + " (OFFSETLEDGER_REQUIRE_KAFKA=1)", pytrace=False)
    pytest.skip(msg)


def _docker_answers() -> tuple[bool, str]:
    try:
        docker = importlib.import_module("docker")  # comes with testcontainers
    except ImportError:
        return False, "python package `docker` not importable"
    try:
        client = docker.from_env()
        client.ping()
        client.close()
        return True, ""
    except Exception as e:  # any failure means "no engine"
        return False, f"no Docker engine answers ({type(e).__name__}: {e})"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of a real Kafka broker for this test session."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if env:
        yield env
        return

    reasons: list[str] = []
    broker = load_broker_module()

    existing = broker.running_bootstrap(broker.DEFAULT_DIR)
    if existing:
        yield existing  # started by someone else (`broker.py up`): leave it running
        return

    ok, why = broker.can_start()
    if ok:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        state_dir = Path(os.environ.get("OFFSETLEDGER_KAFKA_DIR", broker.DEFAULT_DIR))
        if worker:
            state_dir = state_dir / f"xdist-{worker}"
        started = None
        try:
            started = broker.up(state_dir)
        except broker.BrokerError as e:
            reasons.append(f"local broker failed to start: {e}")
        if started:
            try:
                yield started
            finally:
                broker.down(state_dir)
            return
    else:
        reasons.append(f"cannot start a local broker: {why}")

    try:
        from testcontainers.kafka import KafkaContainer
    except ImportError:
        reasons.append("testcontainers[kafka] not importable")
    else:
        up, why = _docker_answers()
        if up:
            image = os.environ.get("OFFSETLEDGER_KAFKA_IMAGE")
            container = KafkaContainer(image) if image else KafkaContainer()
            if hasattr(container, "with_kraft"):
                container = container.with_kraft()
            with container as kafka:
                yield kafka.get_bootstrap_server()
            return
        reasons.append(f"testcontainers unusable: {why}")

    if shutil.which("docker") is None and not any("Docker" in r for r in reasons):
        reasons.append("no `docker` CLI either")
    _unavailable(reasons)
