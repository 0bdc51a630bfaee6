# Copyright 2026 The mnist-diffusion authors. Licensed under the Apache License, Version 2.0.
"""
How `MNISTDDPMPipeline.from_pretrained` loads, with the package installed: the one mapping of diffusers' loading that
stays ours. A folder written by `save_pretrained` goes to diffusers' own loader as it is. A Hub repo (`lab/hub.py`)
names the pipeline and this package's components by file (`["unet_mnist", "ClassConditionedUNet"]`, the file beside
the weights) so that `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` runs those copies for users
without the package; diffusers' loader would run them too (or refuse without the flag). For such a repo or folder, each
component comes from its installed class's own `from_pretrained`, and the pipeline from the stored config. Either way,
what the index names is checked first, before any code could run.

The pipeline file reaches this module by name (`importlib`), which diffusers' remote-code loader does not follow.
"""

import importlib
import inspect
import os

import diffusers
from diffusers import DiffusionPipeline, ModelMixin, SchedulerMixin
from diffusers.guiders import BaseGuidance
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import LocalEntryNotFoundError

from .pipeline_mnist_ddpm_checks import is_repo_id

# A Hub repo names the pipeline's own components by file (["unet_mnist", "ClassConditionedUNet"]), with the file beside
# the weights, so that `trust_remote_code=True` users without the package can load it; the pipeline's `from_pretrained`
# loads such a component from these modules of the installed package instead.
PACKAGE_MODULES = ("unet_mnist", "scheduling_mnist_ddpm")
# What each component is; the guider and the guidance UNet are optional (None, saved as [null, null]).
COMPONENT_KINDS = {"unet": ModelMixin, "scheduler": SchedulerMixin, "guider": BaseGuidance, "guidance_unet": ModelMixin}

# The Hub options of `DiffusionPipeline.from_pretrained`, and the model-loading options a Hub-layout repo passes on.
HUB_OPTIONS = ("cache_dir", "force_download", "local_files_only", "revision", "token")
MODEL_OPTIONS = ("variant", "use_safetensors", "low_cpu_mem_usage", "proxies")


def component_class(name: str, entry) -> type:
    """
    The class that a model_index.json entry `[library, class name]` names for the component `name` (of the kind
    `COMPONENT_KINDS` says): a diffusers class, or one of this package's, by file (a Hub repo) or by module path
    (`save_pretrained`). Anything else is a `ValueError` naming the entry, before any code could run.
    """
    if entry is None:
        raise ValueError(f"model_index.json has no entry for the `{name}` component.")
    if not isinstance(entry, (list, tuple)) or len(entry) != 2 or not all(isinstance(part, str) for part in entry):
        raise ValueError(f"model_index.json must name the `{name}` component as [library, class name], got {entry!r}.")
    library, class_name = entry
    module = library.rpartition(".")[2]
    found = None
    if library == "diffusers":  # a guider only new in diffusers.guiders (0.42's MagnitudeAwareGuidance) is not on top
        found = getattr(diffusers, class_name, None) or getattr(diffusers.guiders, class_name, None)
    elif module in PACKAGE_MODULES and library in (module, f"mnist_diffusion.{module}"):
        found = getattr(importlib.import_module(f"mnist_diffusion.{module}"), class_name, None)
    kind = COMPONENT_KINDS[name]
    if not inspect.isclass(found) or not issubclass(found, kind):
        raise ValueError(f"model_index.json names the `{name}` component {list(entry)!r}, which is not a "
                         f"{kind.__name__} class of diffusers or of this package.")
    return found



def load_pipeline(cls, pretrained_model_name_or_path, kwargs: dict) -> DiffusionPipeline:
    """
    `cls.from_pretrained(pretrained_model_name_or_path, **kwargs)`, for `cls` an `MNISTDDPMPipeline` or a pipeline
    built on it: see the module's docstring.
    """
    name = pretrained_model_name_or_path
    if not os.path.isdir(name) and not is_repo_id(name):
        raise FileNotFoundError(f"No such folder: {name} (nor is it a Hub repo id like 'org/mnist-ddpm').")
    hub = {option: kwargs.pop(option) for option in HUB_OPTIONS if option in kwargs}
    # The index first, by the Hub's own download, which names a missing repo or revision as such.
    try:
        index = cls.load_config(name if os.path.isdir(name) else os.path.dirname(
            hf_hub_download(name, cls.config_name, **hub)))
    except LocalEntryNotFoundError as error:  # offline and not cached; the Hub's message names no repo
        raise LocalEntryNotFoundError(f"{name} is not in the cache and the Hub cannot be reached: {error}") from None
    saved = index.get("_class_name")
    saved_name = saved[1] if isinstance(saved, list) and len(saved) == 2 else saved
    # The family: `cls`, its bases up to the first built directly on DiffusionPipeline, and the pipelines built on that
    # one (the inpainting pipeline, once imported); they share their components, so each loads the others' folders.
    bases = cls.__mro__[:cls.__mro__.index(DiffusionPipeline)]
    family = {base.__name__ for base in bases} | {subclass.__name__ for subclass in bases[-1].__subclasses__()}
    if saved_name not in family:
        raise ValueError(f"{name} holds a {saved_name} (the `_class_name` {saved!r} of its model_index.json), not "
                         f"one of {sorted(family)}; a diffusers pipeline loads with "
                         "`DiffusionPipeline.from_pretrained`.")
    classes = {component: component_class(component, index.get(component)) for component in COMPONENT_KINDS
               if component in ("unet", "scheduler") or index.get(component, [None])[0] is not None}
    if not any(index[component][0] in PACKAGE_MODULES for component in classes):
        return DiffusionPipeline.from_pretrained.__func__(cls, name, **hub, **kwargs)

    # The Hub layout: each component by its class's own `from_pretrained` (the model in the dtype asked for it),
    # then the pipeline from the stored config values, with those the call gives instead.
    dtype = kwargs.pop("torch_dtype", None)
    dtype = kwargs.pop("dtype", dtype)
    model_options = {option: kwargs.pop(option) for option in MODEL_OPTIONS if option in kwargs}
    components = {}
    for component, component_cls in classes.items():
        if component in kwargs:
            components[component] = kwargs.pop(component)
        elif issubclass(component_cls, ModelMixin):  # cast after loading: diffusers < 0.40 has no `dtype` argument
            model = component_cls.from_pretrained(name, subfolder=component, **hub, **model_options)
            model_dtype = dtype.get(component, dtype.get("default")) if isinstance(dtype, dict) else dtype
            components[component] = model if model_dtype is None else model.to(model_dtype)
        else:
            components[component] = component_cls.from_pretrained(name, subfolder=component, **hub)
    parameters = inspect.signature(cls.__init__).parameters
    unknown = sorted(key for key in kwargs if key not in parameters)
    if unknown:
        raise TypeError(f"`from_pretrained` of a Hub-layout repo does not take {unknown}; it takes {HUB_OPTIONS}, "
                        f"`dtype`, {MODEL_OPTIONS}, components and the pipeline's config values.")
    config = {key: value for key, value in index.items()
              if key in parameters and key not in components and key not in COMPONENT_KINDS}
    pipeline = cls(**components, **{**config, **kwargs})
    pipeline.register_to_config(_name_or_path=name)
    return pipeline

