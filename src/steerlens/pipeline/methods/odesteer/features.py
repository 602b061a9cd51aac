"""Random feature maps for the ODESteer barrier, each with a closed-form input gradient.

A feature map ``φ: R^d → R^D`` is applied to unit vectors ``z = x / ‖x‖``. The barrier is linear
in the features, ``f(z) = w · φ(z) + b``, so what the vector field needs is the input gradient of
``w · φ(z)``; :meth:`FeatureMap.grad` gives it in closed form (no autograd graph, no
``requires_grad``), :meth:`FeatureMap.transform` is written with differentiable torch ops only, so
``torch.autograd`` through it is the reference the closed form is tested against.

- :class:`PolySketch` — the tensor sketch (Pham & Pagh 2013) of the polynomial kernel
  ``k(x, y) = (γ xᵀy + c₀)^p``: the input is augmented to ``x̃ = [√γ x, √c₀]``, ``p`` independent
  count sketches ``C_j = CS_j(x̃) ∈ R^D`` (bucket hash ``h_j``, sign ``s_j``) are combined by
  circular convolution through the FFT, ``φ = IFFT(∏_j FFT(C_j))``, so that
  ``E⟨φ(x), φ(y)⟩ = (x̃ᵀỹ)^p = k(x, y)``. Published ODESteer defaults: ``p = 2``, ``γ = 0.1``,
  ``c₀ = 1``, ``D = 8000``.

  Gradient: ``∂(w·φ)/∂C_j = IFFT(FFT(w) · conj(∏_{i≠j} FFT(C_i)))`` (a circular
  cross-correlation of ``w`` with the other sketches' convolution), then back through each
  count sketch, ``∂/∂x̃_i = Σ_j s_j(i) · (∂/∂C_j)[h_j(i)]``, and ``∂/∂x = √γ ∂/∂x̃_{1..d}``.
- :class:`RandomFourier` — random Fourier features of the Gaussian kernel
  ``exp(−γ_rff ‖x − y‖²)``: ``φ(x) = √(2/D) cos(Ωx + β)``, ``Ω ~ N(0, 2γ_rff I)``,
  ``β ~ U[0, 2π)``; gradient ``−√(2/D) Ωᵀ (w ⊙ sin(Ωx + β))``. The ablation.

Random state (hashes and signs, or ``Ω`` and ``β``) is drawn from a seeded generator in
:meth:`FeatureMap.setup` and stored in the artifact (``state_dict``), so a loaded steerer does
not depend on the random number generator of the torch version that loads it.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch
from jaxtyping import Float

FEATURE_TYPES: dict[str, type["FeatureMap"]] = {}


class FeatureError(ValueError):
    """Bad feature-map parameters or an input of the wrong width."""


def register_features(cls):
    FEATURE_TYPES[cls.kind] = cls
    return cls


class FeatureMap:
    """Base class: ``transform`` (differentiable), closed-form ``grad`` and ``value_and_grad``."""

    kind: ClassVar[str] = ""

    def __init__(self, n_features: int = 8000, seed: int = 0, **params) -> None:
        if int(n_features) < 1:
            raise FeatureError(f"n_features must be >= 1, got {n_features}")
        self.n_features = int(n_features)
        self.seed = int(seed)
        self.params = {"n_features": self.n_features, "seed": self.seed, **params}
        self.d: Optional[int] = None

    @property
    def fitted(self) -> bool:
        return self.d is not None

    def _check(self, z: torch.Tensor) -> None:
        if self.d is None:
            raise FeatureError(f"{type(self).__name__} is not set up: call setup(d) first")
        if z.shape[-1] != self.d:
            raise FeatureError(f"{type(self).__name__} was set up for width {self.d}, got input width {z.shape[-1]}")

    def setup(self, d: int) -> "FeatureMap":
        """Draw the random state for inputs of width ``d`` (seeded)."""
        raise NotImplementedError

    def transform(self, z: Float[torch.Tensor, "n d"]) -> Float[torch.Tensor, "n D"]:
        raise NotImplementedError

    def grad(self, z: Float[torch.Tensor, "n d"], w: Float[torch.Tensor, "D"]) -> Float[torch.Tensor, "n d"]:
        """``∇_z (w · φ(z))`` in closed form."""
        return self.value_and_grad(z, w)[1]

    def value_and_grad(self, z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(w · φ(z), ∇_z (w · φ(z)))`` sharing the work of both."""
        raise NotImplementedError

    def value(self, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``w · φ(z)`` per row."""
        return self.transform(z) @ w.to(z.dtype)

    def kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The exact kernel the features approximate, ``[n, m]``."""
        raise NotImplementedError

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def config(self) -> dict:
        return {"kind": self.kind, "params": dict(self.params), "d": self.d}

    @staticmethod
    def from_state(config: dict, tensors: dict[str, torch.Tensor]) -> "FeatureMap":
        cls = FEATURE_TYPES.get(config.get("kind", ""))
        if cls is None:
            raise FeatureError(f"unknown feature map {config.get('kind')!r}; known: {sorted(FEATURE_TYPES)}")
        fm = cls(**config["params"])
        fm.load_state(tensors)
        return fm

    def __repr__(self) -> str:
        ps = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({ps}, d={self.d})"


@register_features
class PolySketch(FeatureMap):
    """Tensor sketch of ``(γ xᵀy + c₀)^degree`` with ``n_features`` buckets (see the module docstring)."""

    kind = "poly_sketch"

    def __init__(self, n_features: int = 8000, degree: int = 2, gamma: float = 0.1, coef0: float = 1.0,
                 seed: int = 0) -> None:
        if int(degree) < 1:
            raise FeatureError(f"degree must be >= 1, got {degree}")
        if not float(gamma) > 0 or float(coef0) < 0:
            raise FeatureError(f"need gamma > 0 and coef0 >= 0, got gamma={gamma}, coef0={coef0}")
        super().__init__(n_features, seed, degree=int(degree), gamma=float(gamma), coef0=float(coef0))
        self.degree, self.gamma, self.coef0 = int(degree), float(gamma), float(coef0)
        self.hashes: Optional[torch.Tensor] = None  # [p, m] bucket of each augmented input coordinate
        self.signs: Optional[torch.Tensor] = None   # [p, m] ±1
        self._cache: dict = {}

    @property
    def m(self) -> int:
        """Width of the augmented input ``x̃`` (``d + 1`` when ``c₀ > 0``)."""
        assert self.d is not None
        return self.d + (1 if self.coef0 > 0 else 0)

    def setup(self, d: int) -> "PolySketch":
        self.d = int(d)
        g = torch.Generator().manual_seed(self.seed)
        self.hashes = torch.randint(0, self.n_features, (self.degree, self.m), generator=g)
        self.signs = (torch.randint(0, 2, (self.degree, self.m), generator=g) * 2 - 1).float()
        self._cache = {}
        return self

    def _tables(self, device, dtype):
        key = (device, dtype)
        t = self._cache.get(key)
        if t is None:
            assert self.hashes is not None and self.signs is not None
            t = (self.hashes.to(device), self.signs.to(device=device, dtype=dtype))
            self._cache[key] = t
        return t

    def _augment(self, z: torch.Tensor) -> torch.Tensor:
        x = z * math.sqrt(self.gamma)
        if self.coef0 > 0:
            x = torch.cat([x, x.new_full((*x.shape[:-1], 1), math.sqrt(self.coef0))], -1)
        return x

    def _sketch_ffts(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``FFT(C_j)`` for every degree ``j`` (``[n, D//2 + 1]`` complex each)."""
        self._check(z)
        h, s = self._tables(z.device, z.dtype)
        xt = self._augment(z)
        out = []
        for j in range(self.degree):
            c = z.new_zeros(z.shape[0], self.n_features).index_add(1, h[j], xt * s[j])
            out.append(torch.fft.rfft(c, n=self.n_features, dim=-1))
        return out

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        fs = self._sketch_ffts(z)
        prod = fs[0]
        for f in fs[1:]:
            prod = prod * f
        return torch.fft.irfft(prod, n=self.n_features, dim=-1)

    def value_and_grad(self, z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        D = self.n_features
        fs = self._sketch_ffts(z)
        wf = torch.fft.rfft(w.to(z.dtype), n=D)
        prod = fs[0]
        for f in fs[1:]:
            prod = prod * f
        value = torch.fft.irfft(prod, n=D, dim=-1) @ w.to(z.dtype)
        h, s = self._tables(z.device, z.dtype)
        g = torch.zeros(z.shape[0], self.m, dtype=z.dtype, device=z.device)
        for j in range(self.degree):
            others = None
            for i, f in enumerate(fs):
                if i != j:
                    others = f if others is None else others * f
            if others is None:  # degree 1: ∂(w·C)/∂C = w
                gc = w.to(z.dtype).expand(z.shape[0], D)
            else:
                gc = torch.fft.irfft(wf * others.conj(), n=D, dim=-1)
            g = g + gc[:, h[j]] * s[j]
        return value, g[:, : self.d] * math.sqrt(self.gamma)

    def kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (self.gamma * x @ y.T + self.coef0) ** self.degree

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.hashes is None or self.signs is None:
            return {}
        return {"hashes": self.hashes.clone(), "signs": self.signs.clone()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "hashes" not in tensors or "signs" not in tensors:
            raise FeatureError("poly_sketch state needs 'hashes' and 'signs'")
        self.hashes, self.signs = tensors["hashes"].long(), tensors["signs"].float()
        if self.hashes.shape != (self.degree, self.hashes.shape[1]) or self.signs.shape != self.hashes.shape:
            raise FeatureError(f"poly_sketch tables of shape {tuple(self.hashes.shape)} / {tuple(self.signs.shape)} "
                               f"do not fit degree {self.degree}")
        self.d = int(self.hashes.shape[1]) - (1 if self.coef0 > 0 else 0)
        self._cache = {}


@register_features
class RandomFourier(FeatureMap):
    """Random Fourier features of ``exp(−gamma ‖x − y‖²)`` (the ablation; see the module docstring)."""

    kind = "rff"

    def __init__(self, n_features: int = 8000, gamma: float = 1.0, seed: int = 0) -> None:
        if not float(gamma) > 0:
            raise FeatureError(f"gamma must be > 0, got {gamma}")
        super().__init__(n_features, seed, gamma=float(gamma))
        self.gamma = float(gamma)
        self.omega: Optional[torch.Tensor] = None  # [D, d]
        self.phase: Optional[torch.Tensor] = None  # [D]
        self._cache: dict = {}

    def setup(self, d: int) -> "RandomFourier":
        self.d = int(d)
        g = torch.Generator().manual_seed(self.seed)
        self.omega = torch.randn(self.n_features, self.d, generator=g) * math.sqrt(2 * self.gamma)
        self.phase = torch.rand(self.n_features, generator=g) * (2 * math.pi)
        self._cache = {}
        return self

    def _tables(self, device, dtype):
        key = (device, dtype)
        t = self._cache.get(key)
        if t is None:
            assert self.omega is not None and self.phase is not None
            t = (self.omega.to(device=device, dtype=dtype), self.phase.to(device=device, dtype=dtype))
            self._cache[key] = t
        return t

    def transform(self, z: torch.Tensor) -> torch.Tensor:
        self._check(z)
        om, ph = self._tables(z.device, z.dtype)
        return math.sqrt(2.0 / self.n_features) * torch.cos(z @ om.T + ph)

    def value_and_grad(self, z: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self._check(z)
        om, ph = self._tables(z.device, z.dtype)
        a = z @ om.T + ph
        c = math.sqrt(2.0 / self.n_features)
        w = w.to(z.dtype)
        return c * torch.cos(a) @ w, -c * (torch.sin(a) * w) @ om

    def kernel(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.exp(-self.gamma * torch.cdist(x, y) ** 2)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.omega is None or self.phase is None:
            return {}
        return {"omega": self.omega.clone(), "phase": self.phase.clone()}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        if "omega" not in tensors or "phase" not in tensors:
            raise FeatureError("rff state needs 'omega' and 'phase'")
        self.omega, self.phase = tensors["omega"].float(), tensors["phase"].float()
        self.d = int(self.omega.shape[1])
        self._cache = {}


def make_features(kind: str = "poly_sketch", *, n_features: int = 8000, seed: int = 0, degree: int = 2,
                  gamma: float = 0.1, coef0: float = 1.0, rff_gamma: float = 1.0) -> FeatureMap:
    """A feature map by name: ``"poly_sketch"`` (default) or ``"rff"``."""
    if kind == "poly_sketch":
        return PolySketch(n_features, degree, gamma, coef0, seed)
    if kind == "rff":
        return RandomFourier(n_features, rff_gamma, seed)
    raise FeatureError(f"unknown features {kind!r}; use 'poly_sketch' or 'rff'")


__all__ = ["FeatureMap", "PolySketch", "RandomFourier", "make_features", "FeatureError", "FEATURE_TYPES"]
