"""A real S3-compatible server and a real multi-node Ray cluster on this machine (tests and bench).

:func:`s3_server` starts moto's standalone S3 server on 127.0.0.1 (a free port) with
authentication on: it creates one IAM user whose key may do anything in S3, and from then
on every request must be signed with that key (a wrong key is refused, as by AWS or MinIO).
:func:`ray_cluster` starts a Ray head (no CPUs: it only schedules) and worker nodes as
separate processes, each with its own raylet, its own scratch folder and its own model
cache (``REENACT_SCRATCH``, ``REENACT_HOME``), and small object stores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: what the S3 helpers put in the environment (and in each Ray node's)
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION",
                 "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")


@dataclass(frozen=True)
class S3Server:
    """A running S3 server: its endpoint and the environment that reaches it with valid keys."""

    endpoint: str
    env: dict[str, str]


@contextlib.contextmanager
def s3_server(buckets: tuple[str, ...] = ("reenact-test",)) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with authentication on and ``buckets`` created."""
    import boto3
    import moto.settings
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = moto.settings.INITIAL_NO_AUTH_ACTION_COUNT
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="reenact-test")
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="reenact-test", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="reenact-test")["AccessKey"]
        s3 = boto3.client("s3", **setup)
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket)
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # from now on every request is checked
        env = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
               "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_SHARED_CREDENTIALS_FILE": os.devnull, "AWS_CONFIG_FILE": os.devnull}
        yield S3Server(endpoint, env)
    finally:
        moto.settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class RayCluster:
    """A head and worker nodes on this machine; ``scratch[i]`` is worker i's scratch folder."""

    cluster: Any
    address: str
    workers: list[Any] = field(default_factory=list)
    scratch: list[Path] = field(default_factory=list)
    node_args: list[dict[str, Any]] = field(default_factory=list)

    def add(self, args: dict[str, Any]) -> None:
        self.workers.append(self.cluster.add_node(**args))
        self.scratch.append(Path(args["env_vars"]["REENACT_SCRATCH"]))
        self.node_args.append(args)

    def kill(self, index: int) -> None:
        """Kill worker node ``index`` at once (raylet, object store and its workers)."""
        self.cluster.remove_node(self.workers[index], allow_graceful=False)
        self.workers[index] = None

    def replace(self, index: int) -> None:
        """Start worker node ``index`` again (same scratch folder and cache) if it was killed."""
        if self.workers[index] is None:
            self.workers[index] = self.cluster.add_node(**self.node_args[index])
            self.cluster.wait_for_nodes()


#: Ray's switch for clusters on one machine's loopback address (named for Windows and macOS,
#: where it is off by default; on Linux "0" keeps every node and the driver on 127.0.0.1)
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextlib.contextmanager
def ray_cluster(root: Path, env: dict[str, str], workers: int = 2, cpus: int = 1) -> Iterator[RayCluster]:
    """A Ray head (0 CPUs) and ``workers`` worker nodes, separate processes with their own
    raylets, ``REENACT_SCRATCH`` and ``REENACT_HOME`` under ``root``; ``env`` goes to every node.

    Node failures are noticed within about a second (health checks every 250 ms)."""
    # loopback only: Ray would otherwise swap 127.0.0.1 for the machine's own interface address
    # (its "remotely reachable" IP); this switch makes it keep the loopback address for every node
    # and for the driver that connects to them
    import ray._private.ray_constants as ray_constants
    from ray.cluster_utils import Cluster

    saved = os.environ.get(LOOPBACK_SWITCH), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[LOOPBACK_SWITCH] = "0"  # the nodes' processes read it when they start
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process (the driver) read it when ray was imported
    small = {"object_store_memory": 100 << 20, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, **small, "_system_config": {"health_check_period_ms": 250,
                                                   "health_check_failure_threshold": 4}})
    made = RayCluster(cluster, cluster.address)
    try:
        for i in range(workers):
            scratch, home = root / f"node{i}" / "scratch", root / f"node{i}" / "home"
            scratch.mkdir(parents=True)
            home.mkdir(parents=True)
            node_env = {**env, "REENACT_SCRATCH": str(scratch), "REENACT_HOME": str(home)}
            made.add({"num_cpus": cpus, "env_vars": node_env, **small})
        cluster.wait_for_nodes()
        yield made
    finally:
        cluster.shutdown()
        if saved[0] is None:
            os.environ.pop(LOOPBACK_SWITCH, None)
        else:
            os.environ[LOOPBACK_SWITCH] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]
