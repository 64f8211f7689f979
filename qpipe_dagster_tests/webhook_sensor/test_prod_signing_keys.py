"""Blank signing keys in production: the start-up check and the receiver say the same thing.

`.env.example` ships the keys blank; the receiver container then stopped with a message saying
"without it the public dev key is used", while production in fact refuses to start.
"""

from __future__ import annotations

import pytest

from qpipe_dagster.ops.env import env_problems
from qpipe_dagster.settings import SettingError
from webhook_sensor.settings import DEV_CURRENT_SIGNING_KEY, Settings

PROD = {
    "QPIPE_DEPLOY": "prod",
    "DAGSTER_HOME": "/opt/dagster/home",
    "DAGSTER_PG_HOST": "postgres",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "dagster",
    "DAGSTER_PG_PASSWORD": "pw",
    "DAGSTER_PG_DB": "dagster",
    "QPIPE_RECEIVER_URL": "https://qpipe.example.com/api/qstash",
    "QSTASH_CURRENT_SIGNING_KEY": "",
    "QSTASH_NEXT_SIGNING_KEY": " ",
}


def test_start_up_check_says_production_refuses_blank_keys() -> None:
    problems = env_problems("receiver", PROD)
    keys = [p for p in problems if "SIGNING_KEY is missing" in p]
    assert len(keys) == 2, problems
    for line in keys:
        assert "production refuses to start" in line and "Upstash console" in line
        assert "dev key is used" not in line.replace("used only outside prod", "")


def test_receiver_itself_refuses_dev_keys_in_production() -> None:
    with pytest.raises(SettingError) as exc:
        Settings.from_env(PROD)
    text = str(exc.value)
    assert "QSTASH_CURRENT_SIGNING_KEY" in text and "QPIPE_DEPLOY=prod" in text
    assert "refuses to start" in text and "Upstash console" in text
    # outside production the dev keys stay the documented local default
    local = Settings.from_env({k: v for k, v in PROD.items() if k != "QPIPE_DEPLOY"})
    assert local.using_dev_keys and local.current_signing_key == DEV_CURRENT_SIGNING_KEY
