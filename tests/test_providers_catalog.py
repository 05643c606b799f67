"""The model catalog: limits, allow-lists, the default model `auto` prefers per provider."""

from __future__ import annotations

from providers_support import settings

from exai.providers.catalog import (
    CATALOG,
    PROVIDER_INFO,
    SIM_MODEL,
    catalog,
    default_model,
    estimate_tokens,
    is_allowed,
)


def test_catalog_has_the_vendors_models_with_limits_and_prices() -> None:
    expected = {
        "glm": {"glm-4.6", "glm-4.5", "glm-4.5-air", "glm-4.5-flash", "glm-4.7", "glm-5", "glm-5.1"},
        "kimi": {
            "kimi-k2-0905-preview",
            "kimi-k2-turbo-preview",
            "kimi-thinking-preview",
            "moonshot-v1-8k",
            "moonshot-v1-32k",
            "moonshot-v1-128k",
            "kimi-k2.5",
            "kimi-k2.6",
            "kimi-k2-thinking",
            "kimi-k2-0711-preview",
        },
    }
    for provider, names in expected.items():
        assert {m.name for m in CATALOG.values() if m.provider == provider} == names
    for info in CATALOG.values():
        assert 0 < info.max_output_tokens <= info.context_window
        prices = (info.input_usd, info.cached_input_usd, info.output_usd)
        assert all(price is None or price >= 0 for price in prices)
    assert CATALOG["moonshot-v1-8k"].context_window == 8_192
    kimi = CATALOG["kimi-k2-0905-preview"]
    assert (kimi.input_usd, kimi.cached_input_usd, kimi.output_usd, kimi.thinking) == (0.60, 0.15, 2.50, False)
    assert CATALOG["glm-4.6"].thinking and CATALOG["kimi-k2.5"].thinking
    assert CATALOG["kimi-thinking-preview"].input_usd is None  # no published price: no cost


def test_simulated_model_only_in_demo() -> None:
    assert SIM_MODEL not in catalog(demo=False)
    assert next(iter(catalog(demo=True))) == SIM_MODEL


def test_defaults_per_provider() -> None:
    s = settings()
    assert default_model(s, "kimi", demo=False) == PROVIDER_INFO["kimi"].default_model
    assert default_model(s, "glm", demo=False) == "glm-4.6"
    assert default_model(s, "kimi", demo=True) == SIM_MODEL


def test_allow_list_restricts_and_moves_the_default() -> None:
    s = settings(glm_allowed_models="glm-4.5-air,glm-4.5-flash")
    assert is_allowed(s, CATALOG["glm-4.5-air"])
    assert not is_allowed(s, CATALOG["glm-4.6"])
    assert is_allowed(s, CATALOG["kimi-k2-0905-preview"])  # the other provider is unrestricted
    assert default_model(s, "glm", demo=False) == "glm-4.5-air"


def test_allow_list_with_no_known_model_leaves_no_default() -> None:
    s = settings(kimi_allowed_models="not-a-model")
    assert default_model(s, "kimi", demo=False) is None


def test_estimate_tokens_is_a_low_estimate() -> None:
    text = "word " * 400  # 2000 characters
    estimate = estimate_tokens([{"role": "user", "content": text}])
    assert 500 <= estimate < 520
    parts = [{"role": "user", "content": [{"type": "text", "text": "x" * 400}]}]
    assert estimate_tokens(parts) == 104
