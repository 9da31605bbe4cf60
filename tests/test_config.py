"""Settings are checked when they are built, from YAML or the command line, before any work."""

import dataclasses
import subprocess
import sys

import pytest

from captag.config import RunConfig, field_type
from captag.errors import CaptagError, ConfigError
from conftest import MINI

BAD_VALUES = [
    ("schedule", "cosin", "cosine"),
    ("precision", "bf17", "bf16"),
    ("accelerator", "gpuu", "gpu"),
    ("val_fraction", 1.5, "< 1"),
    ("val_fraction", -0.1, "0 <="),
    ("lr", -1, "0 <"),
    ("head_lr", -1, "0 <"),
    ("epochs", 0, "1 <="),
    ("epochs", -1, "1 <="),
    ("epochs", "three", "int"),
    ("image_size", 0, "32 <="),
    ("batch_size", 0, "1 <="),
    ("dropout", 1.0, "< 1"),
    ("seed", "x", "int"),
    ("skip_bad", "no", "true or false"),
    ("devices", "0", "auto"),
    ("image_trainable", -2, "-1 <="),
]


@pytest.mark.parametrize("name,value,hint", BAD_VALUES)
def test_a_bad_value_names_the_field_and_what_is_allowed(name, value, hint):
    with pytest.raises(ConfigError) as error:
        RunConfig().update(**{name: value})
    message = str(error.value)
    assert message.startswith(f"{name}: ") and repr(value) in message and hint in message


def test_a_typo_in_a_name_suggests_the_nearest_one():
    with pytest.raises(ConfigError, match=r"unknown setting 'shedule' \(did you mean 'schedule'\?\)"):
        RunConfig().update(shedule="linear")


def test_yaml_values_are_typed():
    cfg = RunConfig.from_dict({"lr": "1e-3", "epochs": 2, "devices": 2, "skip_bad": False})
    assert (cfg.lr, cfg.epochs, cfg.devices, cfg.skip_bad) == (0.001, 2, "2", False)
    assert RunConfig().update(val_fraction=0).val_fraction == 0.0  # no validation split


@pytest.mark.parametrize("text,problem", [
    ("schedule: cosin\n", "schedule"),
    ("epochs: three\n", "epochs"),
    ('skip_bad: "no"\n', "skip_bad"),
    ("- epochs\n- 3\n", "mapping"),
    ("epochs: [3\n", "not valid YAML"),
])
def test_a_bad_config_file_is_refused_with_its_name(tmp_path, text, problem):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        RunConfig.from_yaml(path)
    assert problem in str(error.value)
    if problem in ("mapping", "not valid YAML"):
        assert str(path) in str(error.value)


def test_a_binary_or_missing_config_file_is_a_captag_error(tmp_path):
    binary = tmp_path / "c.yaml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(ConfigError, match="c.yaml"):
        RunConfig.from_yaml(binary)
    with pytest.raises(CaptagError, match="nothere.yaml"):
        RunConfig.from_yaml(tmp_path / "nothere.yaml")


def test_every_field_can_be_set_from_the_command_line(tmp_path):
    from captag.cli import _base_config, build_parser
    argv, wanted = ["train", "--out", str(tmp_path)], {}
    for f in dataclasses.fields(RunConfig):
        kind = field_type(f)
        value = {bool: not f.default, int: 7, float: 0.25}.get(kind, "x")
        choices = {"schedule": "cosine", "accelerator": "cpu", "precision": "bf16-mixed",
                   "devices": "2", "model": "text-only", "strategy": "ddp", "loss": "asl",
                   "time_limit": "20m", "format": "jsonl", "feature_runtime": "openvino",
                   "feature_precision": "bf16"}
        value = choices.get(f.name, value)
        if f.name in ("image_size",):
            value = 64
        flag = "--" + f.name.replace("_", "-")
        argv += [flag if value is True else f"--no-{flag[2:]}"] if kind is bool else [flag, str(value)]
        wanted[f.name] = value
    cfg = _base_config(build_parser().parse_args(argv))
    assert {name: getattr(cfg, name) for name in wanted} == wanted


def test_one_dropout_default():
    from captag.models.fusion import FusionModel
    import inspect
    default = inspect.signature(FusionModel).parameters["dropout"].default
    assert default == RunConfig().dropout


def _captag(*argv):
    """Run the command line in a fresh interpreter; report whether torch was imported."""
    code = ("import sys; from captag.cli import main; code = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(code)")
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("argv,field", [
    (["--schedule", "cosin"], "schedule"),
    (["--precision", "bf17"], "precision"),
    (["--val-fraction", "1.5"], "val_fraction"),
    (["--lr", "-1"], "lr"),
    (["--head-lr", "-1"], "head_lr"),
    (["--epochs", "0"], "epochs"),
    (["--image-size", "0"], "image_size"),
])
def test_a_bad_setting_stops_the_command_before_any_work(tmp_path, argv, field):
    out = tmp_path / "run"
    done = _captag("train", "--csv", str(MINI), "--out", str(out), *argv)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"captag: error: {field}: ")
    assert "NO-TORCH" in done.stdout  # nothing heavy was even imported
    assert not out.exists()


def test_a_typo_in_a_config_file_stops_the_command(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("schedule: cosin\n")
    done = _captag("train", "--config", str(config), "--out", str(tmp_path / "run"))
    assert done.returncode == 2 and "schedule: 'cosin'" in done.stderr
    assert "did you mean 'cosine'" in done.stderr and "NO-TORCH" in done.stdout


def test_a_typo_in_an_option_suggests_the_nearest_one(tmp_path):
    done = _captag("train", "--out", str(tmp_path), "--val-fractoin", "0.1")
    assert done.returncode == 2 and "did you mean '--val-fraction'" in done.stderr


def test_fsdp_on_cpu_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(ConfigError, match="fsdp needs GPUs"):
        RunConfig(strategy="fsdp", accelerator="cpu")
    import torch
    if torch.cuda.is_available():
        return
    from captag.cli import main
    assert main(["train", "--csv", str(MINI), "--out", str(tmp_path / "run"),
                 "--strategy", "fsdp"]) == 2
    assert "fsdp needs GPUs" in capsys.readouterr().err
