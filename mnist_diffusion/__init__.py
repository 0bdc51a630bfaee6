"""mnist-diffusion: a class-conditional DDPM on MNIST for Hugging Face diffusers."""

from .pipeline_mnist_ddpm import MNISTDDPMPipeline
from .pipeline_mnist_inpaint import MNISTDDPMInpaintPipeline
from .scheduling_mnist_ddpm import MNISTDDPMScheduler
from .unet_mnist import ClassConditionedUNet

__version__ = "0.1.0"
__all__ = ["MNISTDDPMPipeline", "MNISTDDPMInpaintPipeline", "ClassConditionedUNet", "MNISTDDPMScheduler"]
