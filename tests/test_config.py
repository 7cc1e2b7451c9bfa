"""``explainer/config.py``: the only module that reads the environment, one parser, one message style, and the
README's table of variables."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

from explainer import config
from explainer.config import VARIABLES, ConfigError, Variable, setting
from explainer.errors import ExplainerError

ROOT = Path(__file__).resolve().parents[1]

#: What reads (or writes) the process environment in module ``os``.
_ENV_NAMES = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}


def environment_reads(source: str) -> list[int]:
    """Line numbers where ``source`` touches the environment through ``os`` (any alias, or a name taken from it)."""
    tree = ast.parse(source)
    os_names = {"os"}  # names bound to the os module
    env_names: set[str] = set()  # names bound to os.environ, os.getenv, ...
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            os_names.update(alias.asname or alias.name for alias in node.names if alias.name == "os")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in _ENV_NAMES or alias.name == "*":
                    env_names.add(alias.asname or alias.name)
                    lines.append(node.lineno)
    for node in ast.walk(tree):
        on_os = (isinstance(node, ast.Attribute) and node.attr in _ENV_NAMES and isinstance(node.value, ast.Name)
                 and node.value.id in os_names)
        if on_os or (isinstance(node, ast.Name) and node.id in env_names):
            lines.append(node.lineno)
    return sorted(set(lines))


def test_the_scan_sees_every_way_of_reading_the_environment():
    assert environment_reads("import os\nx = os.environ.get('A')\n") == [2]
    assert environment_reads("import os\nos.getenv('A')\nos.environ['B'] = '1'\n") == [2, 3]
    assert environment_reads("import os as system\n\n\ndef f():\n    return system.environ\n") == [5]
    assert environment_reads("from os import environ\n") == [1]
    assert environment_reads("from os import getenv as g\ng('A')\n") == [1, 2]
    assert environment_reads("def f(environ):\n    return environ.get('A')\n") == []  # a parameter, not os's
    assert environment_reads("import os\nos.path.join(os.sep, 'x')\n") == []


def test_no_module_but_config_reads_the_environment():
    files = [p for p in sorted((ROOT / "explainer").rglob("*.py")) if p != ROOT / "explainer" / "config.py"]
    files += [ROOT / "app.py"] if (ROOT / "app.py").exists() else []
    assert len(files) > 50  # the scan sees the package
    found = {str(p.relative_to(ROOT)): lines for p in files if (lines := environment_reads(p.read_text("utf-8")))}
    assert found == {}, f"read the environment through explainer.config.setting instead: {found}"
    assert environment_reads((ROOT / "explainer" / "config.py").read_text("utf-8"))  # config itself does


def test_the_readme_carries_the_generated_table():
    readme = (ROOT / "README.md").read_text("utf-8")
    table = config.markdown_table()
    assert table in readme, "paste explainer.config.markdown_table() into the README's Configuration section"
    assert readme.count("| variable | default | meaning |") == table.count("| variable | default | meaning |")
    for name in VARIABLES:
        assert f"| `{name}` |" in table


def test_the_readme_table_names_every_variable_the_code_asks_for():
    asked = set()
    for path in (ROOT / "explainer").rglob("*.py"):
        asked.update(re.findall(r"""(?:setting|default)\(\s*["']([A-Z0-9_]+)["']""", path.read_text("utf-8")))
    assert asked and asked <= VARIABLES.keys()
    assert "EXPLAINER_TURN_SECONDS" in asked and "HF_HUB_OFFLINE" in asked


def test_the_limit_dataclasses_take_their_defaults_from_config():
    from explainer.server.budget import ModelLimits
    from explainer.server.serving import LIMIT_VARIABLES, ServerLimits

    limits = ServerLimits()
    assert {getattr(limits, f) for f in LIMIT_VARIABLES} and all(
        getattr(limits, field) == VARIABLES[name].default for field, name in LIMIT_VARIABLES.items())
    assert ModelLimits().max_activation_bytes == VARIABLES["EXPLAINER_MAX_ACTIVATION_MB"].default * 2**20


# --- one parser ----------------------------------------------------------------------------------------------------


GOOD = [
    ("EXPLAINER_MAX_PARAMS", " 1_000_000 ", 1_000_000),
    ("EXPLAINER_QUEUE_PER_SESSION", "7", 7),
    ("EXPLAINER_TURN_SECONDS", "2.5", 2.5),
    ("EXPLAINER_SESSION_TTL", "60", 60.0),
    ("EXPLAINER_MAX_ACTIVATION_MB", "256", 256),
    ("EXPLAINER_OFFLINE", "1", True),
    ("EXPLAINER_OFFLINE", "Yes", True),
    ("EXPLAINER_OFFLINE", "ON", True),
    ("EXPLAINER_OFFLINE", "true", True),
    ("EXPLAINER_OFFLINE", "0", False),
    ("EXPLAINER_OFFLINE", "off", False),
    ("HF_HUB_OFFLINE", "False", False),
    ("HF_HUB_OFFLINE", "no", False),
    ("EXPLAINER_MODEL", "  resnet50 ", "resnet50"),
    ("EXPLAINER_TRUSTED_PROXIES", " 10.0.0.0/8, 192.168.1.7 ,::1", "10.0.0.0/8,192.168.1.7,::1"),
    ("EXPLAINER_TRUSTED_MODELS", os.pathsep.join(["/m/a.keras", " /m/b.h5 ", ""]),
     (Path("/m/a.keras"), Path("/m/b.h5"))),
]

BAD = [
    ("EXPLAINER_MAX_PARAMS", "many", "a positive whole number (for example 150_000_000)"),
    ("EXPLAINER_MAX_PARAMS", "1.5", "a positive whole number"),
    ("EXPLAINER_MAX_PARAMS", "150M", "a positive whole number"),
    ("EXPLAINER_MAX_PARAMS", "0", "a positive whole number"),
    ("EXPLAINER_MAX_PARAMS", "-3", "a positive whole number"),
    ("EXPLAINER_TURN_SECONDS", "abc", "a positive number of seconds (for example 20)"),
    ("EXPLAINER_TURN_SECONDS", "inf", "a positive number of seconds"),
    ("EXPLAINER_TURN_SECONDS", "nan", "a positive number of seconds"),
    ("EXPLAINER_TURN_SECONDS", "-1", "a positive number of seconds"),
    ("EXPLAINER_MAX_DOWNLOAD_MB", "2 GB", "a positive whole number of megabytes (for example 2048)"),
    ("EXPLAINER_OFFLINE", "maybe", "1, true, yes or on, or 0, false, no or off (for example 1)"),
    ("HF_HUB_OFFLINE", "2", "1, true, yes or on, or 0, false, no or off"),
    ("EXPLAINER_TRUSTED_PROXIES", "*", "IP addresses or networks separated by commas, not *"),
    ("EXPLAINER_TRUSTED_PROXIES", "proxy.example.org", "IP addresses or networks"),
    ("EXPLAINER_TRUSTED_PROXIES", "10.0.0.0/8;1.2.3.4", "IP addresses or networks"),
]


@pytest.mark.parametrize(("name", "raw", "value"), GOOD)
def test_each_kind_parses_good_values(name, raw, value):
    assert setting(name, {name: raw}) == value


@pytest.mark.parametrize(("name", "raw", "takes"), BAD)
def test_each_kind_refuses_bad_values_in_one_style(name, raw, takes):
    with pytest.raises(ConfigError) as caught:
        setting(name, {name: raw})
    assert re.fullmatch(rf"{name} must be .+ \(for example [^)]+\); it is set to '{re.escape(raw)}'\.",
                        str(caught.value)), str(caught.value)
    assert takes in str(caught.value)
    assert isinstance(caught.value, ExplainerError) and isinstance(caught.value, ValueError)


def test_a_hostile_value_is_quoted_on_one_short_line():
    raw = "12\n" + "x" * 500 + "\x1b[31m"
    with pytest.raises(ConfigError) as caught:
        setting("EXPLAINER_MAX_PARAMS", {"EXPLAINER_MAX_PARAMS": raw})
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message and len(message) < 200
    assert message.startswith("EXPLAINER_MAX_PARAMS must be a positive whole number") and "'12 xxx" in message


@pytest.mark.parametrize("name", sorted(VARIABLES))
def test_unset_or_blank_gives_the_default(name):
    default = VARIABLES[name].default
    assert setting(name, {}) == default
    assert setting(name, {name: ""}) == default
    assert setting(name, {name: "   "}) == default


def test_setting_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("EXPLAINER_TURN_SECONDS", "7")
    assert setting("EXPLAINER_TURN_SECONDS") == 7.0
    monkeypatch.setenv("EXPLAINER_TURN_SECONDS", "soon")
    with pytest.raises(ConfigError, match="EXPLAINER_TURN_SECONDS"):
        setting("EXPLAINER_TURN_SECONDS")


def test_an_unknown_name_is_a_programming_error():
    with pytest.raises(KeyError):
        setting("EXPLAINER_NO_SUCH_THING", {})
    with pytest.raises(ValueError, match="unknown kind"):
        Variable("X", "colour", None, "x", "Model")


def test_every_variable_is_documented_and_its_default_parses_back():
    for variable in VARIABLES.values():
        assert variable.help.endswith(".") and "|" not in variable.help and variable.group
        shown = variable.shown_default()
        if variable.kind in {"count", "seconds", "megabytes"}:  # the README's default is a value one may paste
            assert variable.parse(shown.split(" ")[0]) == variable.default


def test_exported_sets_and_puts_back(monkeypatch):
    monkeypatch.delenv("EXPLAINER_TEST_EXPORTED", raising=False)
    with config.exported("EXPLAINER_TEST_EXPORTED", "1"):
        assert os.environ["EXPLAINER_TEST_EXPORTED"] == "1"
    assert "EXPLAINER_TEST_EXPORTED" not in os.environ
    monkeypatch.setenv("EXPLAINER_TEST_EXPORTED", "before")
    with pytest.raises(RuntimeError), config.exported("EXPLAINER_TEST_EXPORTED", "during"):
        raise RuntimeError
    assert os.environ["EXPLAINER_TEST_EXPORTED"] == "before"


def test_tensorflow_is_prepared_before_it_is_imported(monkeypatch):
    source = (ROOT / "explainer" / "__init__.py").read_text("utf-8")
    assert source.index("prepare_tensorflow()") < source.index("import tensorflow")
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    config.prepare_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    config.prepare_tensorflow()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"  # the operator's own setting stays
