"""
Which of diffusers' guiders make a step's prediction depend on the step index or on earlier steps: the guidance rule
(evaluation) picks a default among those that do not, and distillation, which draws random timesteps rather than a
chain of steps, refuses a teacher that guides with one that does.
"""

# Guiders whose combination of the two predictions at a timestep depends on nothing but those predictions (for the
# settings `step_dependence` checks).
STEP_INDEPENDENT_GUIDERS = ("ClassifierFreeGuidance", "AdaptiveProjectedGuidance", "ClassifierFreeZeroStarGuidance",
                            "TangentialClassifierFreeGuidance")


def guider_record(guider) -> dict | None:
    """What a results file or check says of a guider (None for none): its class name and its config."""
    if guider is None:
        return None
    return {"class_name": type(guider).__name__,
            **{key: value for key, value in guider.config.items() if not key.startswith("_")}}


def step_dependence(guider: dict | None) -> str | None:
    """
    Why the guider recorded as `guider` ([`guider_record`]: class name and config) makes a step's prediction depend
    on the step index or on earlier steps; None when it does not (no guider is the pipeline's own classifier-free
    guidance).
    """
    if guider is None:
        return None
    name = guider["class_name"]
    if name not in STEP_INDEPENDENT_GUIDERS:
        return f"{name} is not among the guiders known to combine one step's predictions alone"
    if name == "AdaptiveProjectedGuidance" and guider.get("adaptive_projected_guidance_momentum"):
        return "APG's momentum carries the earlier steps' differences"
    if name == "ClassifierFreeZeroStarGuidance" and guider.get("zero_init_steps", 0) > 0:
        return f"CFG-Zero* zeroes the prediction of the first {guider['zero_init_steps']} step(s)"
    if guider.get("start", 0.0) > 0 or guider.get("stop", 1.0) < 1:
        return "its start and stop are fractions of the steps of a call"
    return None
