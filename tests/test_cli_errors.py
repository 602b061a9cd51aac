"""Every CLI error is one line that names the fix, and inputs are checked before any work
(a typo in a spec or a --vary key is refused before the model loads)."""

import pytest

import steerlens.cliargs
from steerlens.cli import main

SPEC = """
name = "t"
model = "tiny-random"
[[steerer]]
name = "caa"
method = "caa"
params = {{ layer = 1 }}
alpha = 1.0
fit = {{ task = "safety", n = 4 }}
{extra}
"""


def _spec(tmp_path, extra=""):
    p = tmp_path / "spec.toml"
    p.write_text(SPEC.format(extra=extra))
    return str(p)


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the input was checked")
    monkeypatch.setattr(steerlens.cliargs, "model_from_args", refuse)
    import steerlens.pipeline.cli as pcli
    monkeypatch.setattr(pcli, "model_from_args", refuse)


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("vary, needles", [
    ("nosuch=1,2", ["unknown keys ['nosuch']", "known:"]),
    ("params.alhpa=1,2", ["unknown params ['alhpa']", "'layer'"]),
    ("fit.nn=4,8", ["unknown fit keys ['nn']", "'n'"]),
    ("method=nosuch,caa", ["unknown method 'nosuch'", "available:"]),
])
def test_ablate_refuses_unknown_vary_keys_before_loading_the_model(tmp_path, capsys, no_model, vary, needles):
    rc = main(["ablate", _spec(tmp_path), "--vary", vary, "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    _one_line_error(capsys, "steerlens ablate:", *needles)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_spec_with_an_unknown_method_is_told_so(tmp_path, capsys, no_model):
    p = tmp_path / "bad.toml"
    p.write_text('[[steerer]]\nmethod = "caaa"\n')  # no fit table either: the method is what is wrong first
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "unknown method 'caaa'", "available:")


def test_unknown_params_in_a_spec_are_refused(tmp_path, capsys, no_model):
    p = tmp_path / "bad.toml"
    p.write_text(SPEC.format(extra="").replace("layer = 1", "layer = 1, alhpa = 2"))
    assert main(["run", str(p), "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, "unknown params ['alhpa']")


def test_a_bad_device_map_is_an_argument_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--prompt", "hi", "--device-map", "nonsense"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "'nonsense' is not a device map" in err and "Traceback" not in err


def test_a_steering_dir_without_an_artifact_is_one_line(tmp_path, capsys):
    rc = main(["generate", "--prompt", "hi", "--model", "tiny-random", "--steering", str(tmp_path / "nothing"),
               "--max-new-tokens", "2"])
    assert rc == 2
    _one_line_error(capsys, "steerlens generate:", str(tmp_path / "nothing"))
