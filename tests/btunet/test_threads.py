"""The thread policy for shared CPUs (btunet.base.threads)."""
import os
import time

import pytest
import torch

from btunet.base import threads
from btunet.base.threads import CpuLoad, choose_threads, configure_threads


@pytest.mark.parametrize("cores, busy, expected", [
    (2, 0.0, 2), (2, 0.4, 2), (2, 0.6, 1), (2, 1.0, 1), (2, 3.5, 1),
    (8, 0.0, 8), (8, 2.2, 6), (8, 7.9, 1), (1, 0.0, 1), (4, -1.0, 4)])
def test_one_thread_per_free_core(cores, busy, expected):
    assert choose_threads(cores, busy) == expected


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="Linux measures the load from /proc/stat")
def test_own_work_is_not_counted_as_other_processes():
    load = CpuLoad()
    end = time.perf_counter() + 0.3
    while time.perf_counter() < end:  # this process keeps one core busy
        pass
    others = load.others()
    assert others is not None and 0.0 <= others < os.cpu_count()
    assert load.others() is not None  # the next call measures from here


def test_configure_threads_sets_torch_and_the_spinning(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 == torch.get_num_threads()
        monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.2: 5.0)
        monkeypatch.setattr(threads, "available_cores", lambda: 4)
        assert configure_threads() == 1 and not threads.spinning_allowed()
        torch.set_num_threads(3)
        monkeypatch.setattr(threads, "busy_cores", lambda sample_s=0.2: 0.0)
        assert configure_threads() == 3 and threads.spinning_allowed()  # never above torch's own count
    finally:
        torch.set_num_threads(before)
        threads._SPINNING = True


def test_the_wait_policy_is_passive_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    threads.set_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.set_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"
