"""The error model and the settings object, as a client and an operator see them."""

from __future__ import annotations

import argparse

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from gearshift.runtime.errors import FieldViolation, InvalidArgument, ResourceExhausted
from gearshift.runtime.settings import ServiceSettings
from gearshift.runtime.validation import require_valid_chat
from gearshift.v1 import common_pb2


def details_of(status: grpc.Status) -> list[object]:
    proto = rpc_status.status_pb2.Status()
    for key, value in status.trailing_metadata:
        if key == "grpc-status-details-bin":
            proto.ParseFromString(value)
    out: list[object] = []
    for detail in proto.details:
        for cls in (error_details_pb2.RetryInfo, error_details_pb2.BadRequest):
            if detail.Is(cls.DESCRIPTOR):
                msg = cls()
                detail.Unpack(msg)
                out.append(msg)
    return out


def test_resource_exhausted_carries_retry_delay() -> None:
    status = ResourceExhausted("tenant acme is over 60 requests/min", retry_after_s=2.5).to_status()
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    (retry,) = [d for d in details_of(status) if isinstance(d, error_details_pb2.RetryInfo)]
    assert retry.retry_delay.ToNanoseconds() == 2_500_000_000


def test_validation_reports_every_bad_field_at_once() -> None:
    with pytest.raises(InvalidArgument) as err:
        require_valid_chat(
            [common_pb2.ChatMessage(role="user", content="  ")],
            common_pb2.SamplingParams(top_p=0, stop=[""], top_logprobs=3, max_tokens=0),
        )
    fields = [v.field for v in err.value.violations]
    assert fields == [
        "messages[0].content",
        "sampling.max_tokens",
        "sampling.top_p",
        "sampling.stop",
        "sampling.top_logprobs",
    ]
    assert err.value.to_status().code == grpc.StatusCode.INVALID_ARGUMENT


def test_empty_conversation_is_refused() -> None:
    with pytest.raises(InvalidArgument) as err:
        require_valid_chat([], common_pb2.SamplingParams())
    assert err.value.violations == [FieldViolation("messages", "at least one message is required")]


def test_settings_read_env_and_flags_override(monkeypatch: pytest.MonkeyPatch) -> None:
    class RouterLike(ServiceSettings):
        model_config = ServiceSettings.model_config | {"env_prefix": "GEARSHIFT_TEST_"}

    monkeypatch.setenv("GEARSHIFT_TEST_GRPC_PORT", "6000")
    monkeypatch.setenv("GEARSHIFT_TEST_LOG_FORMAT", "text")
    parser = argparse.ArgumentParser()
    RouterLike.add_arguments(parser)
    settings = RouterLike.from_args(parser.parse_args(["--log-format", "json"]))
    assert settings.grpc_port == 6000
    assert settings.log_format == "json"
    with pytest.raises(SystemExit):
        parser.parse_args(["--log-format", "xml"])
