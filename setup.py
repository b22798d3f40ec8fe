from setuptools import find_packages, setup

setup(
    name="samplernn",
    version="0.1.0",
    description="SampleRNN (Mehri et al., ICLR 2017): unconditional raw-audio generation in PyTorch",
    packages=find_packages(include=["samplernn", "samplernn.*"]),
    package_data={"samplernn": ["native.c"]},  # the CPU sampling kernel, compiled on first use
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.1",
        "torchaudio>=2.1",
        "soundfile>=0.12",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "wandb>=0.16",
        "numpy>=1.24",
        "tqdm>=4.60",
        "matplotlib>=3.7",
    ],
    extras_require={"test": ["pytest>=7"], "slurm": ["hydra-submitit-launcher>=1.2"]},
)
