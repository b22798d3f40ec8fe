from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
CONFIG_DIRS = sorted(".".join(d.relative_to(HERE).parts) for d in [HERE / "configs", *(HERE / "configs").rglob("*")]
                     if d.is_dir())
CONFIG_PACKAGES = [f"samplernn.{p}" for p in CONFIG_DIRS]

# Metadata, dependencies and commands are in pyproject.toml; this file ships configs/ (the
# source) inside the package as samplernn/configs, so an installed samplernn runs its
# commands from any folder, without the repository.
setup(
    packages=find_packages(include=["samplernn", "samplernn.*"]) + CONFIG_PACKAGES,
    package_dir={f"samplernn.{p}": p.replace(".", "/") for p in CONFIG_DIRS},
    package_data={"samplernn": ["native.c"],  # the CPU sampling kernel, compiled on first use
                  **{f"samplernn.{p}": ["*.yaml"] for p in CONFIG_DIRS}},
)
