"""The small pipeline spec the spec, seed and evaluation-reuse tests run on the tiny model."""

from typing import Optional


def tiny_spec(*, gate: Optional[str] = None, n: int = 6, baseline: bool = True,
              eval_toml: str = 'tasks = ["safety"]\nlimit = 2\nmax_new_tokens = 3\ntrace = true\n') -> str:
    """TOML: steerer ``a`` (CAA at tiny layer 1, optionally behind ``gate``), a RepE baseline, and ``[eval]``."""
    gate_line = f"gate = {gate}\n" if gate else ""
    base = ('[[baseline]]\nname = "repe"\nmethod = "repe"\nparams = { layer = 1 }\nalpha = 4.0\n'
            f'fit = {{ task = "safety", n = {n} }}\n') if baseline else ""
    return ('name = "tiny"\n[[steerer]]\nname = "a"\n'
            'selector = { kind = "fixed", modules = ["blocks.1.hook_resid_post"] }\neditor = "caa"\n'
            f'{gate_line}alpha = 20.0\nfit = {{ task = "safety", n = {n} }}\n{base}[eval]\n{eval_toml}')
