"""gateway.config: flags, environment defaults, validation, and the bearer tokens."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from tidal.cli import _parser
from tidal.gateway.config import GatewayConfig, Tokens, add_arguments, from_args


def parse(argv: list[str], env: dict[str, str] | None = None) -> GatewayConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, env or {})
    return from_args(parser.parse_args(argv), env or {})


def test_defaults_are_the_documented_ones() -> None:
    config = parse([])

    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 8080)
    assert (config.admin_host, config.admin_port) == ("0.0.0.0", 9090)
    assert config.cold_start_budget_seconds == 600
    assert config.namespace is None
    assert config.token is None
    assert config.pod_address_map is None


def test_flags_and_environment_set_every_knob() -> None:
    env = {
        "TIDAL_GATEWAY_COLD_START_BUDGET_SECONDS": "900",
        "TIDAL_GATEWAY_TOKEN": "from-env",
        "TIDAL_GATEWAY_NAMESPACE": "ml",
        "POD_NAME": "tidal-gateway-abc",
    }
    config = parse(
        [
            "--listen=127.0.0.1:18080",
            "--admin-listen=[::1]:19090",
            "--max-request-bytes=1024",
            "--max-attempts=2",
            "--retry-after=5",
            "--pod-address-map=/tmp/map.json",
        ],
        env,
    )

    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 18080)
    assert (config.admin_host, config.admin_port) == ("::1", 19090)
    assert config.cold_start_budget_seconds == 900
    assert (config.max_request_bytes, config.max_attempts, config.retry_after_seconds) == (
        1024,
        2,
        5,
    )
    assert config.token == "from-env"
    assert config.namespace == "ml"
    assert config.name == "tidal-gateway-abc"
    assert config.pod_address_map == Path("/tmp/map.json")
    assert "from-env" not in repr(config)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--listen=8080"], "--listen must be HOST:PORT"),
        (["--listen=h:99999"], "port out of range"),
        (["--cold-start-budget=soon"], "--cold-start-budget must be a number"),
        (["--cold-start-budget=0"], "cold-start-budget-seconds must be positive"),
        (["--max-attempts=0"], "max-attempts must be at least 1"),
        (["--retry-after=-1"], "must not be negative"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(argv: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse(argv)


def test_the_cli_has_a_gateway_subcommand_that_exits_2_on_bad_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tidal.cli import main

    args = _parser().parse_args(["gateway", "--listen=127.0.0.1:0"])
    assert args.command == "gateway"
    assert main(["gateway", "--listen=nonsense"]) == 2
    assert "--listen must be HOST:PORT" in capsys.readouterr().err


def test_the_address_map_hook_is_labelled_as_a_test_hook_in_help() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, {})

    assert "TEST/SIMULATION HOOK" in parser.format_help()


# --- tokens -----------------------------------------------------------------------------------


def test_without_tokens_auth_is_off() -> None:
    tokens = Tokens()

    assert not tokens.enabled
    assert tokens.allows(None)


@pytest.mark.parametrize(
    ("header", "allowed"),
    [
        ("Bearer alpha", True),
        ("bearer alpha", True),
        ("Bearer  alpha ", True),
        ("Bearer beta", True),
        ("Bearer alph", False),
        ("Bearer alphaa", False),
        ("Basic alpha", False),
        ("alpha", False),
        ("Bearer ", False),
        (None, False),
    ],
)
def test_a_bearer_token_must_match_one_exactly(
    tmp_path: Path, header: str | None, allowed: bool
) -> None:
    path = tmp_path / "tokens"
    path.write_text("# rotated monthly\nbeta\n\n")
    tokens = Tokens("alpha", path)

    assert tokens.allows(header) is allowed


def test_a_rotated_token_file_takes_effect_and_a_broken_one_keeps_the_old_tokens(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens"
    path.write_text("old\n")
    tokens = Tokens(path=path)

    path.write_text("new-token\n")
    os.utime(path, ns=(1, 1))
    assert tokens.reload()
    assert tokens.allows("Bearer new-token")
    assert not tokens.allows("Bearer old")

    path.unlink()
    assert not tokens.reload()
    assert tokens.allows("Bearer new-token")


def test_an_unreadable_or_empty_token_file_fails_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the token file"):
        Tokens(path=tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no token"):
        Tokens(path=empty)
