"""Start one Python SDK worker the way Beam's SDK container does, for an external worker pool without Docker.

Beam's worker pool (``python -m apache_beam.runners.worker.worker_pool_main``) started without
``--container_executable`` runs each worker as a bare ``SdkHarness`` that never receives the job's pipeline
options: Beam's ``FileSystems`` on it has none, so an ``s3://`` read fails there ("Must provide one of client
or options", from Beam's S3 client) although it works on the local runner. On a cluster the SDK container's
``boot`` program asks the runner's provision service for the job's options and starts ``sdk_worker_main``
with them (Docker, process and containerised worker-pool environments alike). This script does the same
(minus the artefact staging: the worker runs in the test's environment, where ccgpt is installed), so the
engine test's workers see what a cluster's workers see. :func:`engines.worker_pool` passes it as the pool's
``--container_executable``; the pool calls it with ``--id``, ``--provision_endpoint``, ``--control_endpoint``,
``--logging_endpoint`` and ``--artifact_endpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    for name in ("id", "provision_endpoint", "control_endpoint", "logging_endpoint"):
        parser.add_argument(f"--{name}", required=True)
    args, _ = parser.parse_known_args(argv)  # --artifact_endpoint: nothing to stage here

    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc, endpoints_pb2
    from google.protobuf import json_format, text_format

    with grpc.insecure_channel(args.provision_endpoint) as channel:
        info = (
            beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
            .GetProvisionInfo(beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", args.id)])
            .info
        )

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url))

    env = {
        **os.environ,
        "WORKER_ID": args.id,
        "PIPELINE_OPTIONS": json_format.MessageToJson(info.pipeline_options),
        "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
        "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
        "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
    }
    os.execve(sys.executable, [sys.executable, "-m", "apache_beam.runners.worker.sdk_worker_main"], env)


if __name__ == "__main__":
    main()
