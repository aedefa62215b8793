"""Parallel kernels follow torch's thread count, leave it as the user set it, and survive fork()."""

import subprocess
import sys
import textwrap

import numba
import pytest

needs_two_cores = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 cores")

# A layer above kernels.PARALLEL_MIN_NNZ, so it runs on several threads when torch is allowed them.
SETUP = """
import numpy as np, torch
from deepzip.runtime import SparseMatrix, kernels
from deepzip.runtime.threads import kernel_threads
w = torch.randn(400, 500, generator=torch.Generator().manual_seed(0))
w[torch.rand(400, 500, generator=torch.Generator().manual_seed(1)) > 0.3] = 0
matrix = SparseMatrix.from_dense(w)
assert matrix.nnz >= kernels.PARALLEL_MIN_NNZ
x = torch.randn(500, generator=torch.Generator().manual_seed(2))
def product():
    return torch.from_numpy(matrix.matvec(x.numpy(), np.zeros(0, np.float32)))
"""


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SETUP) + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@needs_two_cores
def test_kernels_use_torchs_thread_count_and_leave_it_alone():
    # numba's OpenMP layer sets the process-wide OpenMP thread count when it starts; torch's must survive.
    out = run_python("""
        torch.set_num_threads(3)
        product()
        first = torch.get_num_threads()
        torch.set_num_threads(1)
        print(first, kernel_threads(), torch.get_num_threads())
        torch.set_num_threads(2)
        print(kernel_threads())
    """)
    assert out == ["3", "1", "1", "2"]


@needs_two_cores
def test_a_forked_child_runs_the_kernels_on_one_thread():
    # GNU OpenMP is not fork-safe: numba ends a forked child that starts a parallel loop.
    out = run_python("""
        import multiprocessing
        torch.set_num_threads(2)
        expected = product()
        def child(queue):
            queue.put((kernel_threads(), torch.equal(product(), expected)))
        queue = multiprocessing.get_context("fork").Queue()
        process = multiprocessing.get_context("fork").Process(target=child, args=(queue,))
        process.start()
        threads, equal = queue.get(timeout=120)
        process.join()
        print(process.exitcode, threads, equal)
    """)
    assert out == ["0", "1", "True"]
