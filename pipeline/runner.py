"""Which Beam runner executes a curation stage.

The default, ``local``, is Beam's FnApiRunner chosen explicitly: Beam 2.77's ``DirectRunner`` first tries
to download the Prism runner binary and silently falls back when offline, and ccgpt's default path makes no
network attempt. ``portable`` runs the same pipeline through the portable job API with an embedded job
endpoint, the code path Dataflow, Flink and Spark take (pickling, side inputs, staging), so tests catch
runner-specific breakage. Any other name (``DataflowRunner``, ``FlinkRunner``, ``SparkRunner``,
``DirectRunner``, ``PrismRunner``) is handed to Beam with the user's pipeline options passed through.
"""

from __future__ import annotations

import ctypes
import os
import shlex
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.deploy import staging_args
from pipeline.fs import use_options
from pipeline.logs import worker_command
from pipeline.progress import LOCAL_RUNNERS, Progress


@dataclass
class RunnerConfig:
    runner: str = field(
        default="local",
        metadata={"help": "local | portable | DataflowRunner | FlinkRunner | SparkRunner | any Beam runner name"},
    )
    num_workers: int = field(default=0, metadata={"help": "local runner worker processes (0 = one per core)"})
    running_mode: str = field(
        default="multi_processing",
        metadata={"help": "local runner mode: multi_processing | in_memory | multi_threading"},
    )
    options: list[str] = field(
        default_factory=list,
        metadata={"help": "extra Beam pipeline options passed through, e.g. --project=p --region=r"},
    )
    groups_per_wave: int = field(
        default=1,
        metadata={
            "help": "input-file groups one Beam pipeline runs (stages that read many files commit per group when "
            "its pipeline ends): more keeps a large cluster busy, fewer commit sooner"
        },
    )
    progress: bool = field(default=True, metadata={"help": "print records done, rate and ETA while a stage runs"})
    malloc_arenas: int = field(
        default=2,
        metadata={"help": "glibc malloc arenas per process on the local/portable runners (0 = glibc's default)"},
    )
    arrow_pool: str = field(
        default="system",
        metadata={
            "help": "Arrow memory pool on the local/portable runners: "
            "system | jemalloc | mimalloc | '' (Arrow's default)"
        },
    )


_M_ARENA_MAX = -8  # glibc <malloc.h>


def tune_allocators(arenas: int, arrow_pool: str) -> None:
    """Cap glibc's malloc arenas and pick Arrow's memory pool, in this process and in the worker processes
    it starts afterwards (they read ``MALLOC_ARENA_MAX`` / ``ARROW_DEFAULT_MEMORY_POOL`` when they start;
    this process is set through ``mallopt`` and ``pyarrow.set_memory_pool``).

    Why: the local runner moves every bundle through gRPC thread pools, and glibc gives each thread its own
    arena and keeps freed memory there; Arrow's default jemalloc pool also keeps freed pages. Both settings
    lowered the dedup stage's peak memory, driver and workers, and its run time (docs/BENCHMARKS.md, "recorded
    by hand"). Where glibc or the named pool is absent this does nothing.
    """
    if arenas > 0:
        os.environ.setdefault("MALLOC_ARENA_MAX", str(arenas))
        try:
            ctypes.CDLL("libc.so.6").mallopt(_M_ARENA_MAX, arenas)
        except (OSError, AttributeError):
            pass
    if arrow_pool:
        os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", arrow_pool)
        import pyarrow as pa

        try:
            pa.set_memory_pool(getattr(pa, f"{arrow_pool}_memory_pool")())
        except (AttributeError, NotImplementedError, pa.ArrowException):
            pass


def pipeline_options(cfg: RunnerConfig, ship_ccgpt: bool = False) -> PipelineOptions:
    """The Beam options of a run. ``ship_ccgpt`` (set when a pipeline is built, not when options only configure
    file listings) adds what a remote runner's workers install: ccgpt's wheel and the curate requirements
    (:mod:`pipeline.deploy`)."""
    extra: list[str] = []
    for opt in cfg.options:
        extra.extend(shlex.split(opt))
    if cfg.runner == "local":
        workers = cfg.num_workers or os.cpu_count() or 1
        mode = cfg.running_mode if workers > 1 else "in_memory"
        args = [f"--direct_num_workers={workers}", f"--direct_running_mode={mode}"]
    elif cfg.runner == "portable":
        args = ["--job_endpoint=embed", "--environment_type=LOOPBACK"]
    else:
        args = [f"--runner={cfg.runner}"]
        if ship_ccgpt:
            args += staging_args(args + extra)
    return PipelineOptions(args + extra, save_main_session=False)


class StagePipeline(beam.Pipeline):
    """A Beam pipeline that shows progress while it runs (see :mod:`pipeline.progress`).

    :class:`pipeline.accounting.WriteOutcomes` finds ``progress`` through its input's pipeline and counts the
    outcome stream, one per input record, so every stage reports progress without code of its own.
    """

    progress: Progress | None = None

    def __exit__(self, exc_type, exc_val, exc_tb):
        if self.progress is None or exc_type is not None:
            return super().__exit__(exc_type, exc_val, exc_tb)
        with self.progress:
            return super().__exit__(exc_type, exc_val, exc_tb)


def _local_runner(worker: str | None):
    """Beam's FnApiRunner; given ``worker``, the worker processes of ``multi_processing`` start with that command.

    FnApiRunner describes those workers as a subprocess environment running Beam's worker module; the
    command is replaced in the pipeline proto just before the run, so the workers are Beam's, started through
    :mod:`pipeline.logs`, which caps what they print to the terminal (see there).
    """
    from apache_beam.portability import python_urns
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    if worker is None:
        return FnApiRunner()

    class WorkerCommandRunner(FnApiRunner):
        def run_via_runner_api(self, pipeline_proto, options):
            for env in pipeline_proto.components.environments.values():
                if env.urn == python_urns.SUBPROCESS_SDK:
                    env.payload = worker.encode("utf-8")
            return super().run_via_runner_api(pipeline_proto, options)

    return WorkerCommandRunner()


def make_pipeline(cfg: RunnerConfig, label: str = "beam", total: int | None = None) -> StagePipeline:
    """A Beam pipeline on the configured runner (use as a context manager: ``with make_pipeline(cfg) as p``).

    ``label`` names the stage in progress lines; ``total`` (input records, when known) adds percent and ETA.
    Progress is counted on local and portable (loopback) runners, whose workers share the driver's disk.
    """
    options = pipeline_options(cfg, ship_ccgpt=True)
    use_options(options)  # the driver reads and lists files with the options the workers get
    if cfg.runner in LOCAL_RUNNERS:
        tune_allocators(cfg.malloc_arenas, cfg.arrow_pool)
    if cfg.runner == "local":
        p = StagePipeline(runner=_local_runner(worker_command()), options=options)
    elif cfg.runner == "portable":
        from apache_beam.runners.portability.portable_runner import PortableRunner

        p = StagePipeline(runner=PortableRunner(), options=options)
    else:
        p = StagePipeline(options=options)
    if cfg.progress and cfg.runner in LOCAL_RUNNERS:
        p.progress = Progress(label, total=total)
    return p
