import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
MNIST_T10K = REPO.parent / "shared" / "data" / "mnist-t10k"

# Tests must never touch the network nor the user's download cache.
os.environ["DEEPZIP_OFFLINE"] = "1"
torch.set_num_threads(1)
# Without a GPU the Triton kernels (deepzip.runtime.triton_kernels, when Triton is installed) run in
# Triton's interpreter on CPU tensors; read when the kernels are defined, so set before deepzip loads.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def digits():
    from deepzip import data

    return data.load("digits", val_size=300)


STORE = 80 * 2**20  # object store of each local Ray node: the tests' sweeps hold only settings and digits


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster for one test module: a head with no CPUs (steps run on the workers) and two
    one-CPU worker nodes on 127.0.0.1, the driver connected; skipped without Ray."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    before = os.environ.get("PYTHONPATH")  # the nodes' workers import deepzip from this checkout
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), before or ""])
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False, "object_store_memory": STORE})
    workers = [cluster.add_node(num_cpus=1, object_store_memory=STORE) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    cluster.workers, cluster.store = workers, STORE
    yield cluster
    ray.shutdown()
    cluster.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


class Crash(Exception):
    """Raised by `crash_at`: a simulated kill in the middle of training."""


def crash_at(iteration):
    """A training hook that crashes the run at ``iteration`` (resume tests)."""
    def hook(model, optimizer, it):
        if it == iteration:
            raise Crash

    return hook
