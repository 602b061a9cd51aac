"""FineSteer (methods.md). Stage 1, the SCS gate (*when* to steer): :mod:`.scs` registers the gate
roles ``scs`` and ``probe`` and the method ``caa-scs``."""

from .scs import ProbeGate, SCSGate  # noqa: F401  (registers the gate roles and caa-scs)
