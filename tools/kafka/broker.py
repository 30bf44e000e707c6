#!/usr/bin/env python3
"""Start and stop a real single-node Apache Kafka broker (KRaft mode) without Docker.

Standard library only, so it works before any virtualenv exists.  Needs ``java``
(17+) and, the first time, ``mvn`` to resolve the broker jars from
``tools/kafka/pom.xml`` into ``tools/kafka/lib/`` (gitignored).

CLI::

    python tools/kafka/broker.py up     [--dir DIR] [--timeout S] [--set KEY=VALUE ...]
    python tools/kafka/broker.py down   [--dir DIR]
    python tools/kafka/broker.py restart [--dir DIR] [--timeout S] [--kill]
    python tools/kafka/broker.py status [--dir DIR]
    python tools/kafka/broker.py resolve            # only fetch the jars

``up`` prints the bootstrap address (``127.0.0.1:PORT``) and writes it to
``DIR/bootstrap``; it is idempotent (a broker already running in DIR is reused).
``restart`` stops the broker of DIR (SIGTERM, or SIGKILL with ``--kill``; one that
already died is fine) and starts it again on the same ports with its data kept, so
a test can bounce the broker under running clients.
Default DIR is ``.kafka/`` at the repository root.  Broker output goes to
``DIR/broker.log``, its pid to ``DIR/broker.pid``.

Importable: ``up(dir)``, ``down(dir)``, ``restart(dir)``, ``kill(dir)``, ``status(dir)``,
``resolve_jars()``,
``probe(bootstrap)``, ``running_bootstrap(dir)``.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent.parent
POM = HERE / "pom.xml"
LIB_DIR = HERE / "lib"
LIB_STAMP = ".resolved"  # file in LIB_DIR holding the sha256 of the pom it came from
DEFAULT_DIR = REPO_ROOT / ".kafka"
DEFAULT_TIMEOUT = 120.0
HOST = "127.0.0.1"
JVM_HEAP = os.environ.get("OFFSETLEDGER_KAFKA_HEAP", "512m")


class BrokerError(RuntimeError):
    """The broker could not be resolved, started, or reached."""


# --------------------------------------------------------------------------- jars


def _pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()


def jars_resolved(lib_dir: Path = LIB_DIR) -> bool:
    stamp = lib_dir / LIB_STAMP
    try:
        return stamp.read_text().strip() == _pom_digest() and any(lib_dir.glob("kafka_2.13-*.jar"))
    except OSError:
        return False


def java_cmd() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def can_start() -> tuple[bool, str]:
    """Whether ``up`` can work here; the reason names what is missing."""
    if java_cmd() is None:
        return False, "no `java` on PATH (Java 17+ needed to run the Kafka broker)"
    if not jars_resolved() and shutil.which("mvn") is None:
        return False, f"Kafka jars not resolved in {LIB_DIR} and no `mvn` on PATH to resolve them"
    return True, ""


def resolve_jars(lib_dir: Path = LIB_DIR, quiet: bool = True) -> Path:
    """Copy the broker's runtime jars into lib_dir via Maven (no-op when up to date)."""
    if jars_resolved(lib_dir):
        return lib_dir
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Kafka jars missing in {lib_dir} and `mvn` is not on PATH")
    lib_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".lib-", dir=lib_dir.parent))
    try:
        cmd = [
            mvn,
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            "dependency:copy-dependencies",
            f"-Dkafka.lib.dir={tmp}",
        ]
        if quiet:
            cmd.insert(1, "-q")
        print(f"[kafka] resolving broker jars: {' '.join(cmd)}", file=sys.stderr)
        proc = subprocess.run(
            cmd, check=False, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        if proc.returncode != 0:
            raise BrokerError(f"mvn failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}")
        (tmp / LIB_STAMP).write_text(_pom_digest() + "\n")
        if lib_dir.exists():
            shutil.rmtree(lib_dir)
        tmp.rename(lib_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return lib_dir


# ----------------------------------------------------------------- wire protocol


def _kstr(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        vals = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return vals if len(vals) > 1 else vals[0]

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        s = self.buf[self.pos : self.pos + n].decode()
        self.pos += n
        return s


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        out += chunk
    return bytes(out)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> _Reader:
    # request header v1 (non-flexible): api_key, api_version, correlation_id, client_id
    msg = struct.pack(">hhi", api_key, version, corr) + _kstr("offsetledger-probe") + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    r = _Reader(_recv_exact(sock, size))
    if r.take(">i") != corr:
        raise ConnectionError("correlation id mismatch")
    return r


def probe(bootstrap: str, timeout: float = 5.0) -> dict:
    """Ask a Kafka broker whether it serves requests; raises OSError/ValueError if not.

    Sends ApiVersions v0 and then Metadata (v4..v8, non-flexible) by hand and
    returns ``{"apis": {key: (min, max)}, "brokers": [(id, host, port)],
    "cluster_id": str, "controller_id": int}``.  A broker that is still fenced
    (not yet serving) lists no brokers, so callers should wait for a non-empty list.
    """
    host, _, port = bootstrap.rpartition(":")
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _request(sock, 18, 0, 1, b"")  # ApiVersions v0
        err = r.take(">h")
        apis = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">hhh")
            apis[key] = (lo, hi)
        if err not in (0, 35):  # 35 = UNSUPPORTED_VERSION still lists the APIs
            raise ValueError(f"ApiVersions error code {err}")
        info = {"apis": apis, "brokers": [], "cluster_id": None, "controller_id": -1}
        lo, hi = apis.get(3, (0, -1))  # Metadata
        version = min(hi, 8)
        if version < max(lo, 4):
            return info  # no non-flexible Metadata version we can speak; ApiVersions must do
        # topics: empty array (none); allow_auto_topic_creation=false
        body = struct.pack(">i", 0) + b"\x00"
        if version >= 8:
            body += b"\x00\x00"  # include cluster/topic authorized operations = false
        r = _request(sock, 3, version, 2, body)
        r.take(">i")  # throttle_time_ms
        for _ in range(r.take(">i")):
            node_id = r.take(">i")
            bhost = r.string()
            bport = r.take(">i")
            r.string()  # rack
            info["brokers"].append((node_id, bhost, bport))
        info["cluster_id"] = r.string()
        info["controller_id"] = r.take(">i")
        return info


def answers(bootstrap: str, timeout: float = 3.0) -> bool:
    """True when a broker at bootstrap answers and lists at least one live broker."""
    try:
        info = probe(bootstrap, timeout)
    except (OSError, ValueError, struct.error):
        return False
    return bool(info["brokers"]) or 3 not in info["apis"]


# ---------------------------------------------------------------- process control


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:  # reap it if it is our child (the pytest fixture starts it in-process)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie whose parent has not reaped it yet is as good as dead
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _broker_pid(d: Path) -> int | None:
    """Pid of the broker started in d, if it still runs (checks its command line)."""
    try:
        pid = int((d / "broker.pid").read_text().strip())
    except (OSError, ValueError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if b"kafka.Kafka" not in cmdline or str(d / "server.properties").encode() not in cmdline:
            return None  # pid was recycled by something else
    except OSError:
        pass  # no /proc: trust the pid file
    return pid


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A new cluster id: a random UUID, URL-safe base64 without padding (Kafka's
    form). Never one starting with "-": the storage tool's argument parser would
    take it for an option (``--cluster-id/-t: expected one argument``; 1 id in
    64), and Kafka itself never generates those either."""
    while True:
        cid = base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.cleaner.name = kafka.log.LogCleaner
logger.cleaner.level = WARN
"""


def _server_properties(d: Path, port: int, cport: int, extra: dict[str, str]) -> str:
    props = {
        "process.roles": "broker,controller",
        "node.id": "1",
        # dynamic KRaft quorum (the 4.x default): storage is formatted with --standalone
        "controller.quorum.bootstrap.servers": f"{HOST}:{cport}",
        "listeners": f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{cport}",
        "advertised.listeners": f"PLAINTEXT://{HOST}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(d / "data"),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "auto.create.topics.enable": "true",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # KIP-848 ("consumer") groups need no flag in Kafka 4.x: group.version=1 is set at
        # format time and group.coordinator.rebalance.protocols is deprecated (4.4 warns).
        # KIP-848 session timeout/heartbeat are broker-side (defaults 45 s / 5 s, and
        # the minimums equal those); shorter ones make crash/rebalance tests quick.
        "group.consumer.min.session.timeout.ms": "1000",
        "group.consumer.session.timeout.ms": "10000",
        "group.consumer.min.heartbeat.interval.ms": "100",
        "group.consumer.heartbeat.interval.ms": "1000",
        "group.min.session.timeout.ms": "1000",
        "log.segment.bytes": str(1024 * 1024),
        "log.retention.check.interval.ms": "60000",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "background.threads": "4",
    }
    props.update(extra)
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _run_java(args: list[str], d: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, check=False, cwd=d, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def running_bootstrap(d: Path | str = DEFAULT_DIR) -> str | None:
    """Bootstrap of a broker started in d that is alive and answers, else None."""
    d = Path(d)
    try:
        bootstrap = (d / "bootstrap").read_text().strip()
    except OSError:
        return None
    return bootstrap if bootstrap and answers(bootstrap) else None


def status(d: Path | str = DEFAULT_DIR) -> tuple[bool, str]:
    d = Path(d).resolve()
    pid = _broker_pid(d)
    if pid is None:
        return False, f"not running (dir {d})"
    bootstrap = (d / "bootstrap").read_text().strip() if (d / "bootstrap").exists() else "?"
    ok = answers(bootstrap) if bootstrap != "?" else False
    return True, f"running pid {pid} bootstrap {bootstrap} ({'answers' if ok else 'NOT answering'})"


def up(
    d: Path | str = DEFAULT_DIR,
    timeout: float = DEFAULT_TIMEOUT,
    extra: dict[str, str] | None = None,
    attempts: int = 3,
) -> str:
    """Start a broker in d (or reuse the one running there); return its bootstrap."""
    d = Path(d).resolve()
    d.mkdir(parents=True, exist_ok=True)
    java = java_cmd()
    if java is None:
        raise BrokerError("`java` not found on PATH (or $JAVA_HOME/bin)")
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent `up`s on one dir: one starts, others reuse
        if _broker_pid(d) is not None:
            existing = running_bootstrap(d)
            if existing:
                return existing
            down(d)  # running but not answering: replace it
        resolve_jars()
        last = ""
        for _attempt in range(attempts):
            try:
                return _start(d, java, timeout, extra or {})
            except BrokerError as e:  # a port grabbed between pick and bind: try fresh ports
                last = str(e)
                if "Address already in use" not in last:
                    raise
        raise BrokerError(last)


def _jvm(java: str, d: Path) -> list[str]:
    return [
        java,
        f"-Xmx{JVM_HEAP}",
        "-Xms64m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}",
        "-cp",
        str(LIB_DIR / "*"),
    ]


def _start(d: Path, java: str, timeout: float, extra: dict[str, str]) -> str:
    for stale in ("bootstrap", "broker.pid"):
        (d / stale).unlink(missing_ok=True)
    shutil.rmtree(d / "data", ignore_errors=True)
    port, cport = _free_port(), _free_port()
    while cport == port:
        cport = _free_port()
    props = d / "server.properties"
    props.write_text(_server_properties(d, port, cport, extra))
    (d / "log4j2.properties").write_text(LOG4J2)
    jvm = _jvm(java, d)

    fmt = _run_java(
        [
            *jvm,
            "kafka.tools.StorageTool",
            "format",
            "--config",
            str(props),
            f"--cluster-id={_cluster_id()}",
            "--standalone",
            "--ignore-formatted",
        ],
        d,
    )
    if fmt.returncode != 0:
        raise BrokerError(
            f"kafka-storage format failed (exit {fmt.returncode}):\n{fmt.stdout[-4000:]}"
        )

    (d / "broker.log").write_bytes(b"")
    return _launch(d, jvm, f"{HOST}:{port}", timeout)


def _launch(d: Path, jvm: list[str], bootstrap: str, timeout: float) -> str:
    """Run the broker of d (formatted storage, server.properties written)."""
    props = d / "server.properties"
    log = d / "broker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(props)],
            cwd=d,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (d / "broker.pid").write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(
                f"Kafka broker exited with code {proc.returncode} during startup; "
                f"tail of {log}:\n{_tail(log)}"
            )
        if answers(bootstrap, timeout=2.0):
            (d / "bootstrap").write_text(bootstrap + "\n")
            return bootstrap
        time.sleep(0.25)
    _stop_pid(proc.pid)
    raise BrokerError(
        f"Kafka broker did not answer on {bootstrap} within {timeout:.0f}s; "
        f"tail of {log}:\n{_tail(log)}"
    )


def _stop_pid(pid: int, grace: float = 30.0) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(100):
        if not _pid_alive(pid):
            return
        time.sleep(0.05)


def down(d: Path | str = DEFAULT_DIR, grace: float = 30.0) -> bool:
    """Stop the broker started in d (SIGTERM, then SIGKILL after grace s). True if one ran."""
    d = Path(d).resolve()
    pid = _broker_pid(d)
    if pid is not None:
        _stop_pid(pid, grace)
    for stale in ("bootstrap", "broker.pid"):
        (d / stale).unlink(missing_ok=True)
    return pid is not None


def _listener_port(d: Path) -> int:
    """The PLAINTEXT port in d's server.properties."""
    for line in (d / "server.properties").read_text().splitlines():
        if line.startswith("advertised.listeners="):
            return int(line.rsplit(":", 1)[1])
    raise BrokerError(f"no advertised.listeners in {d / 'server.properties'}")


def kill(d: Path | str = DEFAULT_DIR) -> bool:
    """SIGKILL the broker started in d (a crash: nothing is flushed, no clean
    shutdown). Its files stay, so :func:`restart` can bring it back. True if one ran."""
    d = Path(d).resolve()
    pid = _broker_pid(d)
    if pid is None:
        return False
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return True
    for _ in range(200):
        if not _pid_alive(pid):
            break
        time.sleep(0.05)
    return True


def restart(
    d: Path | str = DEFAULT_DIR,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    kill_first: bool = False,
    grace: float = 30.0,
) -> str:
    """Stop the broker of d (SIGTERM, or SIGKILL with ``kill_first``; a broker that
    already died is fine) and start it again with the same ports, configuration and
    data (not reformatted). Returns its bootstrap, the same as before."""
    d = Path(d).resolve()
    if not (d / "server.properties").exists() or not (d / "data").is_dir():
        raise BrokerError(f"no broker was set up in {d}: run `up` first")
    java = java_cmd()
    if java is None:
        raise BrokerError("`java` not found on PATH (or $JAVA_HOME/bin)")
    with open(d / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        pid = _broker_pid(d)
        if pid is not None:
            if kill_first:
                kill(d)
            else:
                _stop_pid(pid, grace)
        (d / "broker.pid").unlink(missing_ok=True)
        bootstrap = f"{HOST}:{_listener_port(d)}"
        deadline = time.monotonic() + timeout
        while True:  # the old process's port can take a moment to be free again
            try:
                return _launch(d, _jvm(java, d), bootstrap, max(1.0, deadline - time.monotonic()))
            except BrokerError as e:
                if "Address already in use" not in str(e) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("up", "down", "status", "restart"):
        p = sub.add_parser(name)
        p.add_argument("--dir", default=str(DEFAULT_DIR), help="state dir (default: %(default)s)")
        if name in ("up", "restart"):
            p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
        if name == "restart":
            p.add_argument("--kill", action="store_true", help="SIGKILL instead of SIGTERM")
        if name == "up":
            p.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="extra/overriding server.properties entry (repeatable)",
            )
    sub.add_parser("resolve", help="only resolve the jars into tools/kafka/lib")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "up":
            extra = dict(kv.split("=", 1) for kv in args.set)
            print(up(args.dir, args.timeout, extra))
        elif args.cmd == "restart":
            print(restart(args.dir, args.timeout, kill_first=args.kill))
        elif args.cmd == "down":
            print("stopped" if down(args.dir) else "not running")
        elif args.cmd == "status":
            running, msg = status(args.dir)
            print(msg)
            return 0 if running else 1
        elif args.cmd == "resolve":
            print(resolve_jars())
    except BrokerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
