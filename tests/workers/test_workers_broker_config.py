"""The Celery configuration for each kind of broker (``broker.url``)."""

from __future__ import annotations

import pytest

from config import Settings
from workers.celery_app import celery_config

STATE = "redis://127.0.0.1:6399/0"


def _config(broker: str | None) -> dict:
    return celery_config(Settings().with_overrides(redis={"url": STATE, "key_prefix": "p:"},
                                                   broker={"url": broker}))


def test_the_state_redis_by_default():
    conf = _config(None)
    assert conf["broker_url"] == STATE
    assert conf["broker_transport_options"]["global_keyprefix"] == "p:"
    assert conf["broker_transport_options"]["visibility_timeout"] == 300


def test_another_redis_keeps_the_redis_transport_options():
    conf = _config("redis://broker:6379/2")
    assert conf["broker_url"] == "redis://broker:6379/2"
    assert conf["broker_transport_options"]["global_keyprefix"] == "p:"


@pytest.mark.parametrize("url", ["amqp://u:p@mq:5672/v", "amqps://u:p@mq:5671/v"])
def test_rabbitmq_confirms_publishes_and_has_no_redis_options(url):
    conf = _config(url)
    options = conf["broker_transport_options"]
    assert conf["broker_url"] == url
    assert options["confirm_publish"] is True
    assert not {"global_keyprefix", "visibility_timeout"} & set(options)


def test_no_state_redis_is_an_error_even_with_a_broker():
    with pytest.raises(ValueError, match=r"redis.url \(or redis.sentinels\) is not set"):
        celery_config(Settings().with_overrides(broker={"url": "amqp://mq"}))
