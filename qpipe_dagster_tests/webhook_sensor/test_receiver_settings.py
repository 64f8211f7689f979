"""Receiver settings from the environment: unusable values name the variable, in
Settings.from_env and when a real `uvicorn webhook_sensor.app:app` starts."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from qpipe_dagster.settings import SettingError
from qpipe_dagster_tests.webhook_sensor.conftest import free_port
from webhook_sensor.limits import TokenBucket
from webhook_sensor.settings import Settings

URL = "https://qpipe.example.com/api/qstash"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("QPIPE_RECEIVER_CLOCK_TOLERANCE_S", "nan"),  # every expired token accepted
        ("QPIPE_RECEIVER_CLOCK_TOLERANCE_S", "inf"),
        ("QPIPE_RECEIVER_RATE_LIMIT", "nan"),  # never limited
        ("QPIPE_RECEIVER_RATE_LIMIT", "1e400"),
        ("QPIPE_RECEIVER_MAX_BODY_BYTES", "nan"),  # bare ValueError from int()
        ("QPIPE_RECEIVER_MAX_BODY_BYTES", "1e400"),  # bare OverflowError
        ("QPIPE_RECEIVER_MAX_BODY_BYTES", "2.5"),  # silently 2
        ("QPIPE_RECEIVER_URL", "http://"),  # every delivery refused as wrong_subject
        ("QPIPE_RECEIVER_URL", "http:///api/qstash"),
        ("QPIPE_RECEIVER_URL", "http://[::1/api/qstash"),
        ("QPIPE_RECEIVER_URL", "https://q example.com/api/qstash"),
        ("QPIPE_CRAWL_PRIVATE_ADDRESSES", "maybe"),
    ],
)
def test_unusable_settings_name_the_variable(name, value):
    with pytest.raises(SettingError, match=re.escape(name)):
        Settings.from_env({name: value})


def test_usable_settings_still_parse():
    s = Settings.from_env(
        {"QPIPE_RECEIVER_CLOCK_TOLERANCE_S": "0", "QPIPE_RECEIVER_MAX_BODY_BYTES": " 2048 ",
         "QPIPE_RECEIVER_RATE_LIMIT": "0.5", "QPIPE_RECEIVER_URL": URL + "/"}
    )  # fmt: skip
    assert (s.clock_tolerance_s, s.max_body_bytes, s.rate_limit_per_s) == (0, 2048, 0.5)
    assert s.receiver_url == URL + "/"
    assert s.public_seeds_only is False  # the local default: make run's demo site is loopback
    assert Settings.from_env({"QPIPE_CRAWL_PRIVATE_ADDRESSES": "refuse"}).public_seeds_only


def test_rate_limit_bucket_refuses_a_non_finite_rate():
    """A NaN rate never refilled and never refused: every request passed."""
    with pytest.raises(ValueError, match="finite"):
        TokenBucket(math.nan)


@pytest.mark.parametrize(
    ("name", "value"),
    [("QPIPE_RECEIVER_MAX_BODY_BYTES", "abc"), ("QPIPE_RECEIVER_LOG_LEVEL", "loud")],
)
def test_uvicorn_refuses_to_start_on_a_bad_setting(tmp_path, name, value):
    """The settings are read inside uvicorn's lifespan call; an error there used to be taken for
    "lifespan unsupported": the server ran on and answered every request 500 with a traceback."""
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), name: value}
    env.pop("QPIPE_INBOX_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "webhook_sensor.app:app", "--host", "127.0.0.1",
         "--port", str(free_port())],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert f"qpipe receiver: {name}={value!r}" in proc.stderr
    assert "Traceback" not in proc.stderr
