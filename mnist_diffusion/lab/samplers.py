"""The samplers a pipeline can run, by name: its own DDPM chain or a diffusers scheduler built from its config.

Shared by the command lines (`--scheduler`, `--samplers`), the evaluation, the figures and the demo.
"""

from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, LCMScheduler, TCDScheduler

from ..pipeline_mnist_ddpm import MNISTDDPMPipeline
from ..scheduling_mnist_ddpm import MNISTDDPMScheduler

# name → (scheduler class, steps used when none are asked for, config values it sets). None: the pipeline's stored
# default, or else the full chain (1000 for the DDPM); the consistency-distilled student (pretrained/mnist-lcm) stores 2
# for its LCMScheduler. "dpm-sde" is DPM-Solver++'s stochastic variant (fresh noise at every step); "tcd" is the
# γ-sampling of a consistency student (Zheng et al., 2024; γ is the call's `eta`, by default the pipeline's `default_eta`).
SAMPLERS = {
    "ddpm": (MNISTDDPMScheduler, None, {}),
    "ddim": (DDIMScheduler, 50, {}),
    "dpm": (DPMSolverMultistepScheduler, 20, {"algorithm_type": "dpmsolver++"}),
    "dpm-sde": (DPMSolverMultistepScheduler, 20, {"algorithm_type": "sde-dpmsolver++"}),
    "lcm": (LCMScheduler, None, {}),
    "tcd": (TCDScheduler, None, {}),
}

# How the docs, the README and the cards name each sampler.
SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpm": "DPM-Solver++", "dpm-sde": "DPM-Solver++ SDE", "lcm": "LCM",
                 "tcd": "TCD"}


def sampler_of(scheduler_config: dict) -> str | None:
    """The name of the sampler whose scheduler `scheduler_config` configures (None: none of `SAMPLERS`)."""
    for name, (scheduler_class, _, settings) in SAMPLERS.items():
        if scheduler_config.get("_class_name") == scheduler_class.__name__ and all(
                scheduler_config.get(key) == value for key, value in settings.items()):
            return name
    return None


def use_sampler(pipe: MNISTDDPMPipeline, name: str) -> int | None:
    """
    Swap `pipe.scheduler` for the sampler called `name`, built from the trained scheduler's config.

    Returns:
        The sampler's default number of steps (None: the pipeline's default, the full DDPM chain).
    """
    if name not in SAMPLERS:
        raise ValueError(f"Unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    scheduler_class, default_steps, settings = SAMPLERS[name]
    # The model's own sampler keeps its config as it is; another is built from it.
    if not isinstance(pipe.scheduler, scheduler_class) or any(
            pipe.scheduler.config.get(key) != value for key, value in settings.items()):
        pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config, **settings)
    return default_steps


def every_step_if_all(guidance_interval, pipe: MNISTDDPMPipeline):
    """A guidance interval as the pipeline takes it: `all` becomes (0, T), which guides every step even when the
    model stores a narrower default; anything else is passed on."""
    if guidance_interval == "all":
        return 0, pipe.scheduler.config.num_train_timesteps
    return guidance_interval
