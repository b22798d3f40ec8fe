from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
CONFIG_DIRS = sorted(".".join(d.relative_to(HERE).parts) for d in [HERE / "configs", *(HERE / "configs").rglob("*")]
                     if d.is_dir())
CONFIG_PACKAGES = [f"samplernn.{p}" for p in CONFIG_DIRS]

setup(
    name="samplernn",
    version="0.1.0",
    description="SampleRNN (Mehri et al., ICLR 2017): unconditional raw-audio generation in PyTorch",
    # configs/ (the source) ships inside the package as samplernn/configs: an installed
    # samplernn runs its commands from any folder, without the repository
    packages=find_packages(include=["samplernn", "samplernn.*"]) + CONFIG_PACKAGES,
    package_dir={f"samplernn.{p}": p.replace(".", "/") for p in CONFIG_DIRS},
    package_data={"samplernn": ["native.c"],  # the CPU sampling kernel, compiled on first use
                  **{f"samplernn.{p}": ["*.yaml"] for p in CONFIG_DIRS}},
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
    extras_require={"test": ["pytest>=7"], "slurm": ["hydra-submitit-launcher>=1.2"],
                    "report": ["wandb[workspaces]"]},
    entry_points={"console_scripts": [
        "samplernn-train = samplernn.cli:train",
        "samplernn-generate = samplernn.cli:generate",
        "samplernn-evaluate = samplernn.cli:evaluate",
        "samplernn-prepare = samplernn.cli:prepare",
        "samplernn-benchmark = samplernn.cli:benchmark",
        "samplernn-compare = samplernn.cli:compare",
        "samplernn-wandb-report = samplernn.wandb_report:main",
    ]},
)
