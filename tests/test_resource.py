"""The resource our SDK setup gives every signal: the service, plus the host and OS it runs on.

The Collector we build has no resource detection (the contrib processor does not build from the
module proxy), so the process reports its own ``host.*`` and ``os.*``, with the SDK's detectors.
"""

from __future__ import annotations

import socket

import pytest

from reasonflow_otel.sdk.setup import _resource


@pytest.fixture(autouse=True)
def no_resource_settings(monkeypatch):
    for name in ("OTEL_RESOURCE_ATTRIBUTES", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", raising=False)


def test_host_and_os_are_detected_by_default():
    attributes = _resource("shop").attributes
    assert attributes["service.name"] == "shop"
    assert attributes["host.name"] == socket.gethostname()
    assert attributes["os.type"] == "linux"


def test_what_the_user_sets_wins_over_what_is_detected(monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "host.name=worker-7")
    assert _resource("shop").attributes["host.name"] == "worker-7"


def test_choosing_detectors_leaves_the_choice_to_the_sdk(monkeypatch):
    monkeypatch.setenv("OTEL_EXPERIMENTAL_RESOURCE_DETECTORS", "otel")
    attributes = _resource("shop").attributes
    assert "host.name" not in attributes
    assert "os.type" not in attributes
