"""The resource probes keep their readings on the run: start readings, then what was used."""

from __future__ import annotations

import time

import pytest

from reasonflow_otel.recorder import NodeInfo, Run
from reasonflow_otel.recorder.probe import (
    RusageProbe,
    ThreadRusageProbe,
    make_probe,
    rusage_cpu_is_fine,
)

NODE = NodeInfo("pocketflow", "Burner", "Burner", "node", is_flow=False)


def burn(seconds: float) -> None:
    deadline = time.thread_time() + seconds
    while time.thread_time() < deadline:
        pass


@pytest.mark.parametrize(
    "probe", [RusageProbe(), ThreadRusageProbe()], ids=lambda p: type(p).__name__
)
def test_a_probe_measures_the_threads_cpu_and_the_peak_rise(probe):
    run = Run(None, NODE, None, None, 0)
    probe.start(run)
    burn(0.05)
    probe.stop(run)

    # getrusage's thread times may move in scheduler ticks: a few milliseconds of slack.
    assert 0.04 <= run.cpu_time < 5
    assert isinstance(run.memory_growth, int)  # bytes: the peak never falls
    assert run.memory_growth >= 0


def test_the_default_probe_reads_getrusage_alone_only_where_its_cpu_times_are_fine():
    probe = make_probe("rusage")
    assert type(probe) is (ThreadRusageProbe if rusage_cpu_is_fine() else RusageProbe)
    assert probe.measures
    assert not make_probe("none").measures
