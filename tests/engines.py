"""A real Beam engine for the tests: Apache Flink through Beam's ``FlinkRunner``, fetched with Maven.

Why not the job-server jar Beam downloads itself: Beam's Python SDK fetches
``beam-runners-flink-<v>-job-server-<sdk version>.jar`` from Maven Central on first use, but Maven Central, as
this project's machines reach it, serves no Beam 2.77 Java artefact (``beam-sdks-java-core``'s newest is
2.76.0) and no shaded job-server jar of any Beam version (404, Flink and Spark alike). The Flink runner
(``beam-runners-flink-1.19``) and its dependencies resolve, newest at Beam :data:`BEAM_JAVA_VERSION` (at 2.70.0
``beam-runners-java-job-service`` is missing). So :func:`flink_job_server_jar` resolves them with ``mvn``
into the local Maven repository (``~/.m2``, cached across runs) and writes a small launcher jar whose manifest
names the job-server driver and that classpath; Beam starts it as it would the shaded jar (``java -jar JAR
--flink-master ...``), given ``--flink_job_server_jar``. The Python SDK (2.77) and this Java runner (2.62)
speak the portable Fn API; the test compares the outputs, so a mismatch between them cannot pass unnoticed.

``python tests/engines.py`` fetches it ahead of the tests (``make test`` does, so CI never skips the engine
test); ``--print`` prints the launcher's path.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

BEAM_JAVA_VERSION = "2.62.0"  # see above: the newest at which the Flink runner resolves with its job service
FLINK_VERSION = "1.19"  # Flink 1.19.0, which beam-runners-flink-1.19 2.62.0 depends on; supports Java 17
DRIVER = "org.apache.beam.runners.flink.FlinkJobServerDriver"
CACHE = Path(os.environ.get("CCGPT_ENGINE_CACHE", Path.home() / ".cache" / "ccgpt" / "engines"))

# The job server's JVM with its embedded Flink cluster, capped so it stays small beside the rest of the suite.
# No `--add-opens` flags are needed on Java 17: curation ran without them (tried with and without).
JVM_OPTIONS = ["-Xmx1g"]

_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>ccgpt.tests</groupId>
  <artifactId>flink-job-server</artifactId>
  <version>1</version>
  <dependencies>
    <dependency>
      <groupId>org.apache.beam</groupId>
      <artifactId>beam-runners-flink-{flink}</artifactId>
      <version>{beam}</version>
    </dependency>
  </dependencies>
</project>
"""


class EngineUnavailable(RuntimeError):
    """Java, Maven or the runner's artefacts cannot be had on this machine."""


def _manifest(main_class: str, classpath: list[str]) -> bytes:
    """A jar manifest: ``Main-Class`` and an absolute ``Class-Path``, lines wrapped at 72 bytes as the
    jar format requires (continuation lines start with one space)."""
    urls = " ".join(Path(p).resolve().as_uri() for p in classpath)
    out = []
    for key, value in (("Manifest-Version", "1.0"), ("Main-Class", main_class), ("Class-Path", urls)):
        line = f"{key}: {value}".encode("ascii")
        out.append(line[:72])
        out.extend(b" " + line[i : i + 71] for i in range(72, len(line), 71))
    return b"\r\n".join(out) + b"\r\n\r\n"


def flink_job_server_jar() -> str:
    """Path of a Flink job-server launcher jar for Beam's ``--flink_job_server_jar``; resolved with Maven on
    first use (about 150 MB into ``~/.m2``), then cached. Raises :class:`EngineUnavailable` saying why."""
    if not shutil.which("java"):
        raise EngineUnavailable("no `java` on PATH for Flink's job server (tested with Java 17)")
    folder = CACHE / f"beam-{BEAM_JAVA_VERSION}-flink-{FLINK_VERSION}"
    jar, listed = folder / "flink-job-server-launcher.jar", folder / "classpath.txt"
    if jar.exists() and listed.exists() and all(Path(p).exists() for p in listed.read_text().strip().split(os.pathsep)):
        return str(jar)  # cached, and ~/.m2 still holds every jar it names
    if not shutil.which("mvn"):
        raise EngineUnavailable("no `mvn` on PATH to fetch Beam's Flink runner from Maven Central")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pom.xml").write_text(_POM.format(flink=FLINK_VERSION, beam=BEAM_JAVA_VERSION))
    cmd = ["mvn", "-q", "-B", "-f", str(folder / "pom.xml"), "dependency:build-classpath"]
    cmd.append(f"-Dmdep.outputFile={listed}")
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise EngineUnavailable(
            f"mvn could not resolve beam-runners-flink-{FLINK_VERSION} {BEAM_JAVA_VERSION}:\n"
            + (done.stdout + done.stderr)[-2000:]
        )
    classpath = listed.read_text().strip().split(os.pathsep)
    tmp = jar.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as zf:
        zf.writestr("META-INF/MANIFEST.MF", _manifest(DRIVER, classpath))
    tmp.replace(jar)
    return str(jar)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _own_group_ending_with_parent() -> None:
    """In the worker pool's process, before it starts: a process group of its own, so stopping it stops
    the SDK workers it started; and a SIGTERM when the test process dies, even by SIGKILL (Linux's
    ``PR_SET_PDEATHSIG``), so no pool outlives an interrupted test run."""
    os.setsid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


@contextlib.contextmanager
def worker_pool(folder: str, timeout: float = 60.0):
    """An external SDK worker pool (``apache_beam.runners.worker.worker_pool_main``) on a free local port:
    the engine's tasks run their Python code in worker processes it starts, not in the driver's process, each
    started through :mod:`sdk_boot` as the SDK container starts them (so they get the job's pipeline
    options). Yields ``localhost:PORT`` for ``--environment_config``. ``folder`` receives the boot wrapper and
    ``worker-pool.log``, the pool's and its workers' output (a worker that cannot start makes the job wait,
    not fail: its traceback is there)."""
    port = free_port()
    boot = os.path.join(folder, "sdk-boot")
    with open(boot, "w", encoding="utf-8") as fh:
        here = os.path.dirname(os.path.abspath(__file__))
        fh.write(f'#!/bin/sh\nexec "{sys.executable}" "{os.path.join(here, "sdk_boot.py")}" "$@"\n')
    os.chmod(boot, 0o755)
    cmd = [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"]
    with open(os.path.join(folder, "worker-pool.log"), "ab") as out:
        proc = subprocess.Popen(
            [*cmd, f"--container_executable={boot}"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_group_ending_with_parent,
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise EngineUnavailable(f"the SDK worker pool did not listen on port {port}")
            time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue


def job_server_options(jar: str) -> list[str]:
    """Beam options that start the job server on an embedded Flink cluster (``--flink_master=[local]``).

    ``ccgpt curate --runner FlinkRunner`` takes the same options as ``--beam-option``s (Beam then starts the
    job server itself and keeps it until the process exits); the test starts it once and stops it after."""
    return [
        "--flink_master=[local]",
        f"--flink_version={FLINK_VERSION}",
        f"--flink_job_server_jar={jar}",
        *(f"--job_server_jvm_property={flag}" for flag in JVM_OPTIONS),
    ]


@contextlib.contextmanager
def flink_job_service(jar: str):
    """Beam's own Flink job-server launcher (the one ``FlinkRunner`` uses), started here so the JVM ends
    with the test rather than at interpreter exit. Yields the job endpoint ``localhost:PORT``."""
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.flink_runner import FlinkJarJobServer

    port = free_port()
    server = FlinkJarJobServer(PipelineOptions([*job_server_options(jar), f"--job_port={port}"]))
    server.start()  # returns once the job service answers
    try:
        yield f"localhost:{port}"
    finally:
        server.stop()


def stage_options(job_endpoint: str, worker_pool_address: str, parallelism: int = 2) -> list[str]:
    """Beam options for a stage on that job server, its Python code run by the external worker pool."""
    return [
        f"--job_endpoint={job_endpoint}",
        "--environment_type=EXTERNAL",
        f"--environment_config={worker_pool_address}",
        f"--parallelism={parallelism}",
    ]


if __name__ == "__main__":
    try:
        path = flink_job_server_jar()
    except EngineUnavailable as e:
        sys.exit(f"engine unavailable: {e}")
    print(path if "--print" in sys.argv else f"Flink job server launcher: {path}")
