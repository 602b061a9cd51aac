"""The one parser of command-line / spec values (steerlens.cliargs.parse_value) and its users."""

import pytest

from steerlens.cliargs import parse_value


@pytest.mark.parametrize("text, want", [
    ("3", 3), ("-2", -2), ("0.5", 0.5), ("1e-3", 1e-3), ("true", True), ("false", False), ("null", None),
    ("[1, 2.5, \"a\"]", [1, 2.5, "a"]), ("[]", []), ('{"epochs": 3}', {"epochs": 3}), ('"7"', "7"),
    ("scs", "scs"), ("True", "True"), ("blocks.1.attn.hook_z[0,2]", "blocks.1.attn.hook_z[0,2]"), ("", ""),
])
def test_parse_value(text, want):
    got = parse_value(text)
    assert got == want and type(got) is type(want)


def test_cli_params_and_spec_vary_use_it():
    from steerlens.pipeline.cli import _params
    from steerlens.pipeline.spec import parse_vary

    assert _params(["alpha=2", "gate=scs", "layers=[1,2]", "center=true"]) == {
        "alpha": 2, "gate": "scs", "layers": [1, 2], "center": True}
    assert parse_vary(["gate=scs,none", "alpha=0.5,1"]) == [("gate", ["scs", "none"]), ("alpha", [0.5, 1])]
