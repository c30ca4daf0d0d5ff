"""Settings: built-in defaults < YAML file < CHATGATE_* environment < overrides (command-line flags).

Every test passes ``env=`` explicitly, so the real environment of the test run never leaks in.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from chatgate.backends.local import embedded_model_path
from chatgate.config import LOG_LEVELS, ConfigError, Settings, builtin_defaults, load_settings

DEFAULT_MODEL = "smollm2-135m-instruct"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def gguf_copy(tmp_path: Path, name: str) -> Path:
    """The embedded GGUF under another file name (a symlink: the file is ~100 MB)."""
    link = tmp_path / name
    link.symlink_to(embedded_model_path())
    return link


def config_error(
    config_file: str | Path | None = None,
    *,
    env: Mapping[str, str],
    overrides: Mapping[str, Any] | None = None,
    model_path: str | None = None,
) -> str:
    """The message of the ConfigError that ``load_settings`` raises for these arguments."""
    with pytest.raises(ConfigError) as info:
        load_settings(config_file, env=env, overrides=overrides, model_path=model_path)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line, fit for `chatgate: <message>` on stderr"
    return message


# --- the built-in defaults ---------------------------------------------------------------------


def test_defaults_serve_the_embedded_model_with_openai_aliases() -> None:
    settings = load_settings(env={})
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.log_level == "info"
    assert settings.threads is None
    assert settings.adaptive_threads is True
    assert settings.model_ids() == [DEFAULT_MODEL]
    model = settings.models[0]
    assert model.path is None  # the embedded GGUF
    assert model.n_ctx == 4096
    assert model.chat_template is None
    assert {"gpt-4", "gpt-4o", "gpt-4o-mini", "gpt-3.5-turbo", "gpt-5"} <= set(settings.aliases)
    assert set(settings.aliases.values()) == {DEFAULT_MODEL}


def test_builtin_defaults_are_a_fresh_copy_each_time() -> None:
    first = builtin_defaults()
    first["aliases"].clear()
    first["port"] = 1
    assert builtin_defaults()["port"] == 8000
    assert builtin_defaults()["aliases"]


def test_the_embedded_model_file_exists() -> None:
    path = embedded_model_path()
    assert path.is_file()
    assert path.suffix == ".gguf"


# --- precedence --------------------------------------------------------------------------------


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9001\nhost: 0.0.0.0\nthreads: 2\n")
    settings = load_settings(config, env={})
    assert (settings.port, settings.host, settings.threads) == (9001, "0.0.0.0", 2)
    assert settings.model_ids() == [DEFAULT_MODEL]  # sections the file does not name stay as they were
    assert "gpt-4o" in settings.aliases


def test_env_overrides_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9001\nhost: 0.0.0.0\nlog_level: debug\n")
    settings = load_settings(config, env={"CHATGATE_PORT": "9002", "CHATGATE_LOG_LEVEL": "warning"})
    assert settings.port == 9002
    assert settings.log_level == "warning"
    assert settings.host == "0.0.0.0"  # not set in the environment: the file's value holds


def test_overrides_beat_env_and_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9001\nthreads: 1\n")
    env = {"CHATGATE_PORT": "9002", "CHATGATE_THREADS": "3"}
    settings = load_settings(config, env=env, overrides={"port": 9003})
    assert settings.port == 9003
    assert settings.threads == 3  # no override given: the environment's value holds


def test_none_overrides_are_flags_not_given() -> None:
    settings = load_settings(env={"CHATGATE_PORT": "9002"}, overrides={"port": None, "host": None})
    assert settings.port == 9002
    assert settings.host == "127.0.0.1"


def test_zero_is_a_real_override() -> None:
    assert load_settings(env={"CHATGATE_PORT": "9002"}, overrides={"port": 0}).port == 0


def test_every_env_variable_is_read() -> None:
    env = {
        "CHATGATE_HOST": "0.0.0.0",
        "CHATGATE_PORT": "1234",
        "CHATGATE_DATA_DIR": "/srv/chatgate",
        "CHATGATE_LOG_LEVEL": "DEBUG",
        "CHATGATE_THREADS": "4",
        "CHATGATE_ADAPTIVE_THREADS": "false",
        "CHATGATE_MAX_WAITING": "7",
    }
    settings = load_settings(env=env)
    assert settings.host == "0.0.0.0"
    assert settings.port == 1234
    assert settings.data_dir == "/srv/chatgate"
    assert settings.log_level == "debug"  # normalised
    assert settings.threads == 4
    assert settings.adaptive_threads is False
    assert settings.max_waiting == 7


def test_empty_env_variables_are_ignored() -> None:
    settings = load_settings(env={"CHATGATE_PORT": "", "CHATGATE_CONFIG": "", "CHATGATE_MODEL": ""})
    assert settings.port == 8000
    assert settings.model_ids() == [DEFAULT_MODEL]


def test_unrelated_env_variables_are_ignored() -> None:
    settings = load_settings(env={"PORT": "1", "chatgate_port": "2", "CHATGATE_ALIASES": "x"})
    assert settings.port == 8000
    assert "gpt-4o" in settings.aliases


def test_env_none_means_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATGATE_PORT", "9444")  # undone by monkeypatch after the test
    assert load_settings().port == 9444
    assert load_settings(env={}).port == 8000


# --- the config file ---------------------------------------------------------------------------


def test_chatgate_config_env_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9005\n")
    assert load_settings(env={"CHATGATE_CONFIG": str(config)}).port == 9005


def test_explicit_file_beats_chatgate_config(tmp_path: Path) -> None:
    from_env = write(tmp_path / "env.yaml", "port: 9005\n")
    explicit = write(tmp_path / "flag.yaml", "port: 9006\n")
    assert load_settings(explicit, env={"CHATGATE_CONFIG": str(from_env)}).port == 9006


def test_file_path_may_be_a_str(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9007\n")
    assert load_settings(str(config), env={}).port == 9007


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "---\n"])
def test_empty_file_changes_nothing(tmp_path: Path, text: str) -> None:
    config = write(tmp_path / "c.yaml", text)
    assert load_settings(config, env={}) == load_settings(env={})


def test_empty_aliases_section_removes_every_alias(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "aliases: {}\n")
    settings = load_settings(config, env={})
    assert settings.aliases == {}
    assert settings.model_ids() == [DEFAULT_MODEL]


def test_aliases_section_replaces_not_merges(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", f"aliases:\n  my-model: {DEFAULT_MODEL}\n")
    assert load_settings(config, env={}).aliases == {"my-model": DEFAULT_MODEL}


def test_models_section_replaces_the_default_list(tmp_path: Path) -> None:
    gguf = gguf_copy(tmp_path, "other.gguf")
    config = write(
        tmp_path / "c.yaml",
        f"models:\n  - id: mine\n    path: {gguf}\n    n_ctx: 1024\n    chat_template: chatml\n"
        "aliases:\n  gpt-4o: mine\n",
    )
    settings = load_settings(config, env={})
    assert settings.model_ids() == ["mine"]
    model = settings.models[0]
    assert (model.path, model.n_ctx, model.chat_template) == (str(gguf), 1024, "chatml")
    assert settings.aliases == {"gpt-4o": "mine"}


def test_models_section_without_aliases_keeps_default_aliases_which_then_dangle(tmp_path: Path) -> None:
    """The default aliases point at the default model: replacing ``models`` alone orphans them."""
    config = write(tmp_path / "c.yaml", "models:\n  - id: mine\n")
    message = config_error(config, env={})
    assert f"points at '{DEFAULT_MODEL}'" in message
    assert "not a configured model" in message


def test_several_models(tmp_path: Path) -> None:
    config = write(
        tmp_path / "c.yaml",
        "models:\n  - id: a\n  - id: b\n    n_ctx: 512\naliases:\n  x: a\n  y: b\n",
    )
    settings = load_settings(config, env={})
    assert settings.model_ids() == ["a", "b"]
    assert settings.aliases == {"x": "a", "y": "b"}


# --- model_path (--model / CHATGATE_MODEL) -----------------------------------------------------


def test_model_path_serves_only_that_file_and_retargets_aliases(tmp_path: Path) -> None:
    gguf = gguf_copy(tmp_path, "My-Tiny.Model.gguf")
    settings = load_settings(env={}, model_path=str(gguf))
    assert settings.model_ids() == ["my-tiny.model"]  # the lowercased file stem
    assert settings.models[0].path == str(gguf)
    assert settings.aliases
    assert set(settings.aliases) == set(load_settings(env={}).aliases)
    assert set(settings.aliases.values()) == {"my-tiny.model"}


def test_model_path_replaces_the_files_models_too(tmp_path: Path) -> None:
    gguf = gguf_copy(tmp_path, "tiny.gguf")
    config = write(tmp_path / "c.yaml", "models:\n  - id: a\n  - id: b\naliases:\n  x: a\n  y: b\n")
    settings = load_settings(config, env={}, model_path=str(gguf))
    assert settings.model_ids() == ["tiny"]
    assert settings.aliases == {"x": "tiny", "y": "tiny"}


def test_model_path_with_no_aliases(tmp_path: Path) -> None:
    gguf = gguf_copy(tmp_path, "tiny.gguf")
    config = write(tmp_path / "c.yaml", "aliases: {}\n")
    settings = load_settings(config, env={}, model_path=str(gguf))
    assert settings.aliases == {}


def test_model_path_named_like_an_alias_drops_that_alias(tmp_path: Path) -> None:
    """``--model GPT-4.gguf``: the model is called gpt-4, so the alias gpt-4 must not shadow it."""
    gguf = gguf_copy(tmp_path, "GPT-4.gguf")
    settings = load_settings(env={}, model_path=str(gguf))
    assert settings.model_ids() == ["gpt-4"]
    assert "gpt-4" not in settings.aliases
    assert settings.aliases["gpt-4o"] == "gpt-4"


def test_chatgate_model_env(tmp_path: Path) -> None:
    gguf = gguf_copy(tmp_path, "from-env.gguf")
    assert load_settings(env={"CHATGATE_MODEL": str(gguf)}).model_ids() == ["from-env"]


def test_model_path_argument_beats_chatgate_model(tmp_path: Path) -> None:
    from_env = gguf_copy(tmp_path, "from-env.gguf")
    from_flag = gguf_copy(tmp_path, "from-flag.gguf")
    settings = load_settings(env={"CHATGATE_MODEL": str(from_env)}, model_path=str(from_flag))
    assert settings.model_ids() == ["from-flag"]


def test_model_path_must_be_an_existing_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    assert config_error(env={}, model_path=str(missing)) == f"model file not found: {missing}"
    assert "model file not found" in config_error(env={}, model_path=str(tmp_path))  # a directory


# --- errors ------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    message = config_error(missing, env={})
    assert message == f"cannot read config file {missing}: No such file or directory"


def test_missing_file_named_by_chatgate_config(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert str(missing) in config_error(env={"CHATGATE_CONFIG": str(missing)})


def test_directory_instead_of_file(tmp_path: Path) -> None:
    assert config_error(tmp_path, env={}).startswith(f"cannot read config file {tmp_path}: ")


def test_path_through_a_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9001\n") / "c.yaml"
    assert config_error(config, env={}) == f"cannot read config file {config}: Not a directory"


def test_unreadable_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 9001\n")
    config.chmod(0)
    try:
        if os.access(config, os.R_OK):
            pytest.skip("this user can read any file (root)")
        assert config_error(config, env={}) == f"cannot read config file {config}: Permission denied"
    finally:
        config.chmod(0o644)


def test_binary_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\x8d\xff\x00port: 1\n")
    assert config_error(config, env={}) == f"config file {config} is not UTF-8 text"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("port: [1\n", "line 2, column 1"),
        ("a: b: c\n", "line 1, column 5"),
        ('host: "unterminated\n', "line 2, column 1"),
        ("port: 1\n  host: x\n", "line 2"),
    ],
)
def test_invalid_yaml(tmp_path: Path, text: str, where: str) -> None:
    config = write(tmp_path / "c.yaml", text)
    message = config_error(config, env={})
    assert message.startswith(f"config file {config} is not valid YAML: ")
    assert where in message


def test_unsafe_yaml_tags_are_refused(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "host: !!python/object/apply:os.getcwd []\n")
    assert "is not valid YAML" in config_error(config, env={})


@pytest.mark.parametrize("text", ["- port: 1\n", "just a string\n", "42\n", "[]\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    config = write(tmp_path / "c.yaml", text)
    assert config_error(config, env={}) == f"config file {config} must hold a mapping at the top level"


def test_alias_pointing_at_an_unknown_model(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "aliases:\n  gpt-4o: no-such-model\n")
    message = config_error(config, env={})
    assert message == "alias 'gpt-4o' points at 'no-such-model', which is not a configured model"


def test_alias_colliding_with_a_model_id(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models:\n  - id: a\n  - id: b\naliases:\n  a: b\n")
    assert config_error(config, env={}) == "alias 'a' has the same name as a configured model"


def test_duplicate_model_ids(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models:\n  - id: a\n  - id: b\n  - id: a\naliases: {}\n")
    message = config_error(config, env={})
    assert "'a'" in message
    assert "more than one" in message


def test_empty_models_list(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models: []\naliases: {}\n")
    assert "no models configured" in config_error(config, env={})


@pytest.mark.parametrize("bad_id", ["org/model", "/", "", " padded", "padded "])
def test_bad_model_id(tmp_path: Path, bad_id: str) -> None:
    config = write(tmp_path / "c.yaml", f"models:\n  - id: '{bad_id}'\naliases: {{}}\n")
    message = config_error(config, env={})
    assert message.startswith(f"invalid configuration: models.0.id (from config file {config}): ")
    assert "without '/'" in message
    assert repr(bad_id) in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "prot: 9001\n")
    assert config_error(config, env={}) == f"invalid configuration: prot (from config file {config}): unknown setting"


def test_unknown_model_key(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models:\n  - id: a\n    context: 512\naliases: {}\n")
    message = config_error(config, env={})
    assert message == f"invalid configuration: models.0.context (from config file {config}): unknown key"


def test_unknown_override_key() -> None:
    assert "colour (from command line): unknown setting" in config_error(env={}, overrides={"colour": "red"})


@pytest.mark.parametrize("value", ["abc", "80.5", "8000x", "0x1f90"])
def test_non_numeric_port_env(value: str) -> None:
    message = config_error(env={"CHATGATE_PORT": value})
    assert message.startswith("invalid configuration: port (from CHATGATE_PORT): ")
    assert "valid integer" in message
    assert repr(value) in message


@pytest.mark.parametrize("value", ["-1", "65536"])
def test_port_out_of_range(value: str) -> None:
    assert "port (from CHATGATE_PORT)" in config_error(env={"CHATGATE_PORT": value})


def test_port_out_of_range_in_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "port: 70000\n")
    assert f"port (from config file {config})" in config_error(config, env={})


@pytest.mark.parametrize(("name", "value"), [("CHATGATE_THREADS", "0"), ("CHATGATE_MAX_WAITING", "none")])
def test_bad_numbers_in_env(name: str, value: str) -> None:
    assert f"(from {name})" in config_error(env={name: value})


def test_unknown_log_level() -> None:
    message = config_error(env={"CHATGATE_LOG_LEVEL": "verbose"})
    assert message.startswith("invalid configuration: log_level (from CHATGATE_LOG_LEVEL): must be one of ")
    assert all(level in message for level in LOG_LEVELS)


def test_several_problems_are_reported_on_one_line() -> None:
    message = config_error(env={"CHATGATE_PORT": "abc", "CHATGATE_THREADS": "zero"})
    assert "port (from CHATGATE_PORT)" in message
    assert "threads (from CHATGATE_THREADS)" in message


def test_small_n_ctx(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models:\n  - id: a\n    n_ctx: 8\naliases: {}\n")
    assert "models.0.n_ctx" in config_error(config, env={})


def test_wrong_section_types(tmp_path: Path) -> None:
    config = write(tmp_path / "c.yaml", "models: {id: a}\naliases: [gpt-4o]\n")
    message = config_error(config, env={})
    assert "models (from config file" in message
    assert "aliases (from config file" in message


def test_result_is_a_settings() -> None:
    assert isinstance(load_settings(env={}), Settings)


def test_limits_come_from_the_config_file_and_are_checked(tmp_path: Path) -> None:
    defaults = load_settings(env={}).limits
    assert (defaults.max_body_bytes, defaults.max_messages, defaults.max_metadata_pairs) == (8 << 20, 2048, 16)
    config = write(tmp_path / "c.yaml", "limits:\n  max_body_bytes: 1048576\n  header_timeout_seconds: 2.5\n")
    limits = load_settings(config, env={}).limits
    assert (limits.max_body_bytes, limits.header_timeout_seconds, limits.max_json_depth) == (1 << 20, 2.5, 64)
    bad = write(tmp_path / "bad.yaml", "limits:\n  max_json_depth: 5000\n  max_bodybytes: 1\n")
    message = config_error(bad, env={})
    assert "limits.max_json_depth (from config file" in message
    assert "limits.max_bodybytes (from config file" in message and message.endswith("unknown key")
