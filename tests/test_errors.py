"""One root for every error exai raises on purpose; provider errors carry an ErrorKind and their cause."""

from __future__ import annotations

import pytest

from exai.config import ConfigError
from exai.errors import ExaiError
from exai.limits import Overloaded
from exai.protocol import BadMessage, RpcError
from exai.providers.base import BudgetExhausted, ErrorKind, ProviderError
from exai.providers.openai_compat import AttemptError
from exai.store import StoreUnavailable, ThreadNotFound
from exai.tools.base import ToolArgumentError


@pytest.mark.parametrize(
    "error",
    [ConfigError, RpcError, BadMessage, Overloaded, ProviderError, AttemptError, BudgetExhausted,
     ThreadNotFound, StoreUnavailable, ToolArgumentError],
)
def test_every_error_exai_raises_on_purpose_is_an_exai_error(error: type[Exception]) -> None:
    assert issubclass(error, ExaiError)


def test_a_provider_error_kind_is_an_enum_that_reads_as_its_name() -> None:
    error = BudgetExhausted(3)
    assert error.kind is ErrorKind.BUDGET
    assert error.kind == "budget" and f"{error.kind}" == "budget"
    assert error.fails_circuit is False


def test_fails_circuit_defaults_to_retryable() -> None:
    assert ProviderError("kimi", ErrorKind.UNAVAILABLE, "down", retryable=True).fails_circuit is True
    assert ProviderError("glm", ErrorKind.QUOTA, "cap", fails_circuit=True).fails_circuit is True
