"""sglbuild: reproducible, verified SGLang images for NVIDIA Blackwell (sm_120) GPUs."""

__version__ = "0.1.0"
