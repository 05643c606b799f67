"""EXAI_MODELS_FILE: a TOML file that adds models to the catalog or overrides their fields,
checked once at start-up (a bad file stops `exai serve` with one line, exit 2)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from providers_support import limiters, settings
from support import EXAI
from test_serve_cli import clean_env

from exai.providers.base import Usage
from exai.providers.catalog import CATALOG, ModelsFileError, catalog, read_models_file
from exai.providers.gateway import ModelGateway

GOOD = """
[models."glm-4.6"]
input_usd = 1.5
thinking = false

[models."my-kimi"]
provider = "kimi"
context_window = 65536
max_output_tokens = 4096
input_usd = 1
cached_input_usd = 0.25
output_usd = 3.0
thinking = true
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.toml"
    path.write_text(text)
    return path


def test_a_models_file_adds_models_and_overrides_only_the_fields_it_gives(tmp_path: Path) -> None:
    models = catalog(demo=False, models_file=write(tmp_path, GOOD))
    glm = models["glm-4.6"]
    assert (glm.input_usd, glm.thinking) == (1.5, False)
    assert (glm.context_window, glm.output_usd) == (CATALOG["glm-4.6"].context_window, CATALOG["glm-4.6"].output_usd)
    mine = models["my-kimi"]
    assert (mine.provider, mine.context_window, mine.max_output_tokens, mine.thinking) == ("kimi", 65536, 4096, True)
    assert mine.cost_usd(Usage(1_000_000, 1_000_000, 400_000)) == pytest.approx(0.6 + 0.1 + 3.0)
    assert CATALOG["glm-4.6"].input_usd != 1.5  # the built-in catalog is left as it was


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[models.x\n", "is not valid TOML"),
        ('[other]\na = 1\n', "unknown table or key 'other'"),
        ('[models."new"]\nprovider = "kimi"\n', "model 'new' is not in the catalog, so it needs context_window, max_output_tokens"),
        ('[models."glm-4.6"]\ncontext_window = -5\n', "model 'glm-4.6': context_window: Input should be greater than 0"),
        ('[models."glm-4.6"]\ncontext_window = "big"\n', "model 'glm-4.6': context_window: Input should be a valid integer"),
        ('[models."glm-4.6"]\nprovider = "openai"\n', "model 'glm-4.6': provider: Input should be 'kimi' or 'glm'"),
        ('[models."glm-4.6"]\nprice = 1\n', "model 'glm-4.6': price: unknown field"),
        ('[models."glm-4.6"]\ninput_usd = -1.0\n', "model 'glm-4.6': input_usd: Input should be greater than or equal to 0"),
        ('[models."glm-4.6"]\nmax_output_tokens = 999999999\n', "model 'glm-4.6': max_output_tokens is larger than context_window"),
        ('[models."auto"]\nprovider = "glm"\n', "model 'auto': this name cannot be used"),
        ('models = 3\n', "'models' must be a table"),
    ],
)
def test_a_bad_models_file_names_the_file_the_model_and_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ModelsFileError) as caught:
        read_models_file(path, catalog(demo=False))
    assert str(caught.value).startswith(f"EXAI_MODELS_FILE={path}: ")
    assert problem in str(caught.value)
    assert "\n" not in str(caught.value)


def test_config_check_refuses_a_bad_models_file(tmp_path: Any) -> None:
    path = write(tmp_path, '[models."glm-4.6"]\ncontext_window = 0\n')
    env = clean_env(tmp_path, EXAI_MODELS_FILE=str(path))
    proc = subprocess.run([*EXAI, "config", "--check"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"exai: invalid configuration: EXAI_MODELS_FILE={path}: model 'glm-4.6': context_window: Input should be greater than 0"
    )
    write(tmp_path, GOOD)
    proc = subprocess.run([*EXAI, "config", "--check"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert (proc.returncode, proc.stdout.strip()) == (0, "configuration ok")


def test_serve_stops_with_one_line_on_a_bad_models_file(tmp_path: Any) -> None:
    path = write(tmp_path, '[models."mine"]\nprovider = "kimi"\n')
    env = clean_env(tmp_path, EXAI_MODELS_FILE=str(path))
    proc = subprocess.run([*EXAI, "serve"], env=env, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and "'mine'" in lines[0] and "needs context_window" in lines[0]


def test_the_gateway_routes_and_prices_by_the_models_file(tmp_path: Path) -> None:
    gw = ModelGateway.from_settings(settings(models_file=write(tmp_path, GOOD)), limiters())
    assert gw.resolve("my-kimi") == ("kimi", "my-kimi")
    assert gw.models["glm-4.6"].input_usd == 1.5
    listed = {m["name"]: m for m in gw.list_models()}
    assert listed["my-kimi"]["context_window"] == 65536
