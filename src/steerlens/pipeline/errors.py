"""The pipeline's error type (the bottom of the pipeline core: every other module may raise it)."""


class PipelineError(ValueError):
    """Bad pipeline input or state (unfitted role, unknown method, wrong data)."""


__all__ = ["PipelineError"]
