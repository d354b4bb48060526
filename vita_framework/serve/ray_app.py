"""``serve.engine=ray``: the same app as a Ray Serve deployment of ``serve.replicas`` replicas.

Each replica builds the configured pipeline and serves :func:`vita_framework.serve.app.create_app` (its own
engine thread, dynamic batching and encoder cache); Ray's HTTP proxy listens on ``serve.host:serve.port`` and
routes each request to a replica. ``serve.replica_resources`` are each replica's ``ray_actor_options``
(``num_cpus``, ``num_gpus``). ``serve.ray_address`` null starts a local Ray (dashboard off); ``auto`` or
``ray://<head>:10001`` joins an existing cluster, whose nodes must have this package installed. Every response
names its replica in the ``X-Vita-Replica`` header.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from .options import ServeOptions

log = logging.getLogger("vita_framework.serve")
APP_NAME = "vita"


def deployment(cfg: Any, options: ServeOptions) -> Any:
    """The bound Ray Serve application for ``cfg`` (a composed run config with a ``serve`` node)."""
    from omegaconf import OmegaConf
    from ray import serve

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)

    def build_replica_app() -> Any:  # runs in each replica (a function: Ray calls it there)
        return replica_app(plain)

    resources = {"num_cpus": float(options.replica_resources.num_cpus),
                 "num_gpus": float(options.replica_resources.num_gpus)}
    ingress = serve.deployment(
        serve.ingress(build_replica_app)(), name="VitaServer", num_replicas=int(options.replicas),
        ray_actor_options=resources, max_ongoing_requests=int(options.max_batch_size + options.max_queue))
    return ingress.bind()


def replica_app(plain: dict[str, Any]) -> Any:
    """Inside a replica: build the pipeline from the config and return the app."""
    from omegaconf import OmegaConf

    from ..builder import build_pipeline
    from .app import create_app
    from .options import serve_options
    from .run import model_name

    cfg = OmegaConf.create(plain)
    options = serve_options(cfg.get("serve"))
    if options.replica_resources.num_cpus >= 1:  # torch's threads within the replica's share of the CPUs
        import torch

        torch.set_num_threads(int(options.replica_resources.num_cpus))
    pipeline = build_pipeline(cfg, serving=True)
    replica = f"{socket.gethostname()}:{os.getpid()}"
    return create_app(pipeline, options, model_name=model_name(cfg, options), replica=replica)


def start(cfg: Any, options: ServeOptions) -> str:
    """Connect to (or start) Ray, run the deployment, and return the URL its proxy answers on."""
    import ray
    from ray import serve

    port = options.port or _free_port(options.host)
    if options.ray_address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    if not ray.is_initialized():
        ray.init(address=options.ray_address, include_dashboard=False, ignore_reinit_error=True,
                 log_to_driver=False, configure_logging=False)
    serve.start(http_options={"host": options.host, "port": port})
    serve.run(deployment(cfg, options), name=APP_NAME, route_prefix="/", blocking=False)
    shown = f"[{options.host}]" if ":" in options.host else options.host
    return f"http://{shown}:{port}"


def run_ray(cfg: Any, options: ServeOptions) -> None:
    from ray import serve

    from .run import model_name

    url = start(cfg, options)
    log.info("serving '%s' on %s with %d Ray Serve replica(s) (OpenAI API base URL: %s/v1)",
             model_name(cfg, options), url, options.replicas, url)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
